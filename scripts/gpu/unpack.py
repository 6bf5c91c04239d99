#!/usr/bin/env python3
"""On the GPU machine (call 1 of `scripts/gpu-check pack`): SRC=.dev -> G.

Usage: unpack.py SRC G
Writes G/gleaner, G/home/models/all-minilm-l6-v2/{model.safetensors (f32 again), tokenizer.json,
config.json, vocab.txt}, G/gguf.part1 and G/manifest.json. Every implementation there reads this
rebuilt model.safetensors, so they compare on the same weights. Needs numpy and safetensors.
"""
import lzma
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load, save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, g = sys.argv[1], sys.argv[2]
    m = os.path.join(g, "home", "models", "all-minilm-l6-v2")
    os.makedirs(m, exist_ok=True)
    exe = os.path.join(g, "gleaner")
    with open(os.path.join(src, "gleaner.xz"), "rb") as f, open(exe, "wb") as out:
        out.write(lzma.decompress(f.read()))
    os.chmod(exe, 0o755)
    with open(os.path.join(src, "minilm16.safetensors.xz"), "rb") as f:
        w = load(lzma.decompress(f.read()))
    w = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in w.items()}
    save_file(w, os.path.join(m, "model.safetensors"))
    for f in ("tokenizer.json", "config.json", "vocab.txt"):
        shutil.copy(os.path.join(src, f), m)
    for f in ("gguf.part1", "manifest.json"):
        shutil.copy(os.path.join(src, f), g)
    print("unpacked", exe, m, sorted(os.listdir(m)))


if __name__ == "__main__":
    main()
