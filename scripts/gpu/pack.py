#!/usr/bin/env python3
"""Pack a gleaner binary and the model files for the GPU machine (called by `scripts/gpu-check pack`).

Usage: pack.py --bin GLEANER --minilm DIR --gguf FILE --corpus FILE... [--wheel FILE]
               [--limit BYTES] [--reserve BYTES] [--out-root DIR]

Writes DIR/.dev, DIR/.dev2 and DIR/.dev3 (DIR: --out-root, default the current directory), each at
most --limit bytes (.dev at most --limit minus --reserve, the room the .gl debs take in the same
call):
  .dev/   gleaner.xz (stripped), minilm16.safetensors.xz (f16, the word-embedding rows no corpus
          uses set to zero), tokenizer.json, config.json, vocab.txt, gguf.part1, manifest.json
  .dev2/  gguf.part2
  .dev3/  gguf.part3, the gguf wheel (--wheel)
scripts/gpu/unpack.py reverses it on the GPU machine. Needs numpy, safetensors and tokenizers (the
venv that scripts/gpu-check makes).
"""
import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save
from tokenizers import Tokenizer

MIB = 2**20
# all-MiniLM-L6-v2 was trained on at most 256 tokens; gleaner truncates there (models/src/tokenize.rs).
MAX_TOKENS = 256
DIRS = (".dev", ".dev2", ".dev3")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def xz(data):
    # The xz tool uses every core; Python's lzma only one. Same format either way.
    if shutil.which("xz"):
        return subprocess.run(["xz", "-T0", "-6", "-c"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    return lzma.compress(data, preset=6)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--minilm", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--corpus", nargs="+", required=True)
    ap.add_argument("--wheel", action="append", default=[])
    ap.add_argument("--limit", type=int, default=60 * MIB)
    ap.add_argument("--reserve", type=int, default=0)
    ap.add_argument("--out-root", default=".")
    a = ap.parse_args()

    dirs = [os.path.join(a.out_root, d) for d in DIRS]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    dev, dev2, dev3 = dirs

    # Vocabulary rows the GPU machine will ever look up: the special and unused ids below 1000
    # (BERT's [PAD], [UNK], [CLS], [SEP], [MASK], [unused*]) and every id of every corpus line.
    tok = Tokenizer.from_file(os.path.join(a.minilm, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    used = set(range(1000))
    for f in a.corpus:
        with open(f, encoding="utf-8") as fh:
            lines = [line.rstrip("\n") for line in fh]
        for enc in tok.encode_batch(lines):
            used.update(enc.ids)
    w = load_file(os.path.join(a.minilm, "model.safetensors"))
    emb = w["embeddings.word_embeddings.weight"]
    keep = np.zeros(emb.shape[0], bool)
    keep[sorted(i for i in used if i < emb.shape[0])] = True
    emb[~keep] = 0
    # Only float tensors become f16; anything else (an int position_ids buffer) is kept as is.
    packed = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in w.items()}
    with open(os.path.join(dev, "minilm16.safetensors.xz"), "wb") as f:
        f.write(xz(save(packed)))
    for f in ("tokenizer.json", "config.json", "vocab.txt"):
        shutil.copy(os.path.join(a.minilm, f), dev)

    with tempfile.TemporaryDirectory() as tmp:
        stripped = os.path.join(tmp, "gleaner")
        subprocess.run(["strip", "-o", stripped, a.bin], check=True)
        with open(stripped, "rb") as f, open(os.path.join(dev, "gleaner.xz"), "wb") as out:
            out.write(xz(f.read()))

    gguf_sha = sha256(a.gguf)
    manifest = {
        "gleaner_sha256": sha256(a.bin),
        "gguf_sha256": gguf_sha,
        "gguf_name": os.path.basename(a.gguf),
        "minilm_rows_kept": int(keep.sum()),
        "minilm_rows": int(len(keep)),
        "corpora": [os.path.basename(c) for c in a.corpus],
    }
    with open(os.path.join(dev, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)

    wheels = []
    for whl in a.wheel:
        shutil.copy(whl, dev3)
        wheels.append(os.path.basename(whl))

    with open(a.gguf, "rb") as f:
        g = f.read()
    cut1 = a.limit - a.reserve - dir_size(dev)
    if cut1 < 0:
        sys.exit(f"pack.py: .dev is already {dir_size(dev) / MIB:.1f} MiB without the GGUF "
                 f"(limit {(a.limit - a.reserve) / MIB:.1f} MiB): the binary grew; split it or "
                 "raise --limit")
    cut2 = cut1 + a.limit
    rest = len(g) - cut2
    if rest + dir_size(dev3) > a.limit:
        sys.exit(f"pack.py: the GGUF's last part ({rest / MIB:.1f} MiB) does not fit in .dev3")
    for i, (d, part) in enumerate(zip(dirs, (g[:cut1], g[cut1:cut2], g[cut2:])), start=1):
        with open(os.path.join(d, f"gguf.part{i}"), "wb") as f:
            f.write(part)

    for d in dirs:
        print(f"{os.path.basename(d)}: {dir_size(d) / MIB:.1f} MiB "
              f"({', '.join(sorted(os.listdir(d)))})")
    print(f"MiniLM: {keep.sum()} of {len(keep)} vocabulary rows kept; GGUF sha256 {gguf_sha}")


if __name__ == "__main__":
    main()
