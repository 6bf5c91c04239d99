#!/usr/bin/env python3
"""Print `bench generate`'s prompt (GEN_PROMPT in cli/src/cmd/bench/generate.rs), without a newline.

Usage: gen_prompt.py [RUST_FILE]
Read from the Rust source so the PyTorch peer decodes exactly the text gleaner's bench decodes.
Stdlib only.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "cli", "src", "cmd", "bench", "generate.rs")


def rust_str(body):
    """The value of a Rust "..." literal's body: \\<newline> skips the newline and the next line's
    leading whitespace; the common escapes are decoded."""
    body = re.sub(r"\\\n\s*", "", body)
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), body)


def gen_prompt(path=DEFAULT):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    m = re.search(r'const\s+GEN_PROMPT\s*:\s*&str\s*=\s*"((?:[^"\\]|\\.)*)"\s*;', src, re.S)
    if not m:
        raise SystemExit(f"gen_prompt.py: no `const GEN_PROMPT: &str = \"...\";` in {path}")
    return rust_str(m.group(1))


if __name__ == "__main__":
    sys.stdout.write(gen_prompt(sys.argv[1] if len(sys.argv) > 1 else DEFAULT))
