#!/usr/bin/env python3
"""Independent float64 numpy reference for all-MiniLM-L6-v2 (sentence-transformers).

It shares nothing with the Rust/Burn implementation except the weight file and
the tokenizer file, and writes models/tests/data/minilm_reference.json, which
the Rust tests compare against.

How to rerun (the JSON is committed; rerun only when sentences or the model change):

    scripts/setup --minilm-only                 # puts the weights in the model cache
    python3 -m venv /tmp/minilm-ref
    /tmp/minilm-ref/bin/pip install -r models/reference/requirements.txt
    /tmp/minilm-ref/bin/python models/reference/minilm_reference.py
    # optional: --model-dir DIR  (default ${GLEANER_HOME:-~/.cache/gleaner}/models/all-minilm-l6-v2)
    #           --out FILE       (default models/tests/data/minilm_reference.json)

Pipeline (matches sentence-transformers' modules.json for this model):
  tokenizer.json (BertNormalizer lowercase + accent strip, WordPiece), special
  tokens [CLS] ... [SEP], no padding, truncation at 256 tokens (max_seq_length
  from sentence_bert_config.json; NOTE tokenizer.json itself carries a
  truncation/padding of 128 that must be overridden)
  -> BERT encoder: word + position + token_type(0) embeddings, LayerNorm(eps 1e-12),
     6 x [12-head self-attention (head dim 32) with attention mask, dense, residual,
     LayerNorm; FFN 384->1536 GELU(erf) ->384, residual, LayerNorm]   (post-LN)
  -> masked mean pooling over tokens -> L2 normalisation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256
HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS  # 32
LAYERS = 6
FFN = 1536
LN_EPS = 1e-12

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = (
    Path(os.environ.get("GLEANER_HOME", Path.home() / ".cache" / "gleaner"))
    / "models"
    / "all-minilm-l6-v2"
)
DEFAULT_OUT = REPO_ROOT / "models" / "tests" / "data" / "minilm_reference.json"

# sentence-transformers' published output for this sentence (first 4 dims).
EXAMPLE_SENTENCE = "This is an example sentence"
EXAMPLE_PREFIX = [0.06766, 0.06350, 0.04871, 0.07930]

_LONG = (
    "The committee met on a grey Tuesday morning to review the proposal for the new "
    "harbour bridge, and after three hours of careful debate about costs, traffic, "
    "the fishing fleet, the old lighthouse and the migrating birds that nest under the "
    "eastern pier every spring, its members agreed to commission two independent "
    "studies, publish every document online, and hold a public meeting in the town "
    "hall before any final decision is taken next year."
)  # ~75 words

_OVER_256 = " ".join(
    [
        "Distributed systems fail in partial and surprising ways: a worker may stall "
        "while its heartbeat keeps flowing, a coordinator may lose its lease yet keep "
        "writing, and a network partition may heal just in time to hide the evidence.",
        "Engineers therefore design for idempotent retries, bounded queues, explicit "
        "deadlines, checksummed payloads, and deterministic replay of every job.",
        "Gleaner schedules embedding and generation jobs across heterogeneous workers, "
        "verifies a sample of results against a reference, and rewards honest work.",
    ]
    * 4
)  # well over 256 WordPiece tokens; exercises truncation

SENTENCES = [
    EXAMPLE_SENTENCE,
    "Hello world",
    "Each sentence is converted",
    "Hi!",
    "Wait... what?! No way -- that's (really) \"weird\"; isn't it? [yes/no] {maybe} <ok> @home #1 & co.",
    "Café crème brûlée à la française: naïve façade in Zürich, São Paulo, Kraków, 東京 and Москва 🙂",
    "In 2023, revenue grew 3.14% to $25,462.7 million; order #0042 shipped on 07/08/2024 at 12:30 (UTC+2), 1e-9 tolerance.",
    "THE QUICK Brown fOX jumps over the LAZY dog",
    _LONG,
    _OVER_256,
]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(path: Path) -> dict[str, np.ndarray]:
    raw = load_file(str(path))
    out = {}
    for name, arr in raw.items():
        if name.startswith("bert."):
            name = name[len("bert.") :]
        out[name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
    return out


def make_tokenizer(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    return tok


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as torch
    return (x - mean) / np.sqrt(var + LN_EPS) * w + b


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    # torch Linear stores weight as [out, in]
    return x @ w.T + b


def encode(weights: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ids, mask: [batch, seq] int arrays (mask 1 = real token). Returns [batch, 384] unit vectors."""
    W = weights
    batch, seq = ids.shape
    assert seq <= MAX_TOKENS

    x = (
        W["embeddings.word_embeddings.weight"][ids]
        + W["embeddings.position_embeddings.weight"][np.arange(seq)][None, :, :]
        + W["embeddings.token_type_embeddings.weight"][0][None, None, :]
    )
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])

    # Keys that are padding get -inf before the softmax.
    key_ok = mask.astype(bool)[:, None, None, :]  # [b, 1, 1, seq]
    scale = 1.0 / math.sqrt(HEAD_DIM)

    def heads(t: np.ndarray) -> np.ndarray:  # [b, s, 384] -> [b, h, s, 32]
        return t.reshape(batch, seq, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q = heads(linear(x, W[p + "attention.self.query.weight"], W[p + "attention.self.query.bias"]))
        k = heads(linear(x, W[p + "attention.self.key.weight"], W[p + "attention.self.key.bias"]))
        v = heads(linear(x, W[p + "attention.self.value.weight"], W[p + "attention.self.value.bias"]))

        scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # [b, h, s, s]
        scores = np.where(key_ok, scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, HIDDEN)

        attn = linear(ctx, W[p + "attention.output.dense.weight"], W[p + "attention.output.dense.bias"])
        x = layer_norm(x + attn, W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"])

        h = gelu(linear(x, W[p + "intermediate.dense.weight"], W[p + "intermediate.dense.bias"]))
        h = linear(h, W[p + "output.dense.weight"], W[p + "output.dense.bias"])
        x = layer_norm(x + h, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"])

    m = mask.astype(np.float64)[:, :, None]
    pooled = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    norm = np.linalg.norm(pooled, axis=-1, keepdims=True)
    return pooled / np.maximum(norm, 1e-12)


def tokenize(tok: Tokenizer, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=True).ids)


def embed_one(weights, ids: list[int]) -> np.ndarray:
    arr = np.asarray([ids], dtype=np.int64)
    return encode(weights, arr, np.ones_like(arr))[0]


def embed_batch_padded(weights, id_lists: list[list[int]]) -> np.ndarray:
    seq = max(len(x) for x in id_lists)
    ids = np.zeros((len(id_lists), seq), dtype=np.int64)  # [PAD] = 0
    mask = np.zeros_like(ids)
    for r, x in enumerate(id_lists):
        ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
    return encode(weights, ids, mask)


def round_sig(x: float, digits: int = 9) -> float:
    return float(f"{x:.{digits}g}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    st_path = args.model_dir / "model.safetensors"
    tok_path = args.model_dir / "tokenizer.json"
    for p in (st_path, tok_path):
        if not p.is_file():
            print(f"missing {p}; run scripts/setup --minilm-only first", file=sys.stderr)
            return 1

    weights = load_weights(st_path)
    tok = make_tokenizer(tok_path)

    id_lists = [tokenize(tok, s) for s in SENTENCES]
    embs = np.stack([embed_one(weights, ids) for ids in id_lists])

    # Self-checks.
    ex = embs[0]
    got = [round(float(v), 5) for v in ex[:4]]
    if not np.allclose(ex[:4], EXAMPLE_PREFIX, atol=6e-6):
        print(f"FAIL: {EXAMPLE_SENTENCE!r} starts {got}, want {EXAMPLE_PREFIX}", file=sys.stderr)
        return 1
    batched = embed_batch_padded(weights, id_lists)
    diff = float(np.abs(batched - embs).max())
    if diff > 1e-10:
        print(f"FAIL: padded batch differs from one-at-a-time by {diff:g}", file=sys.stderr)
        return 1
    if len(id_lists[-1]) != MAX_TOKENS:
        print(f"FAIL: long text gave {len(id_lists[-1])} tokens, expected truncation to {MAX_TOKENS}", file=sys.stderr)
        return 1

    doc = {
        "model": "all-MiniLM-L6-v2",
        "model_sha256": sha256_file(st_path),
        "tokenizer_sha256": sha256_file(tok_path),
        "max_tokens": MAX_TOKENS,
        "sentences": [
            {"text": s, "ids": ids, "embedding": [round_sig(float(v)) for v in e]}
            for s, ids, e in zip(SENTENCES, id_lists, embs)
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One sentence per line keeps diffs readable; the file is still plain JSON.
    compact = dict(ensure_ascii=False, separators=(",", ":"))
    head = {k: v for k, v in doc.items() if k != "sentences"}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v, **compact)}," for k, v in head.items()]
    lines.append('  "sentences": [')
    lines.append(",\n".join("    " + json.dumps(s, **compact) for s in doc["sentences"]))
    lines += ["  ]", "}"]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    print(f"example sentence starts {[f'{v:.5f}' for v in ex[:4]]} (sentence-transformers: {EXAMPLE_PREFIX})", file=sys.stderr)
    print(f"padded-batch vs single max |diff| = {diff:.3g}", file=sys.stderr)
    for s, ids in zip(SENTENCES, id_lists):
        print(f"  {len(ids):3d} tokens  {s[:60]!r}", file=sys.stderr)
    print(f"wrote {args.out} ({len(SENTENCES)} sentences)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
