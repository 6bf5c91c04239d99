#!/usr/bin/env python3
"""PyTorch eager fp32 peer of gleaner's MiniLM and SmolLM2 benches; runs on the GPU machine.

Usage:
  torch_peer.py embed --model-dir DIR --corpus FILE --batches 32,128
      sentences/s of all-MiniLM-L6-v2 (transformers BertModel on DIR's model.safetensors, mean
      pooling and L2 normalisation as sentence-transformers computes them, texts sorted by length
      as sentence-transformers and gleaner batch them, truncation at 256 tokens as gleaner does).
      An untimed warm-up, then per batch size a `first` and a `warm` pass over the whole corpus.
  torch_peer.py embed-job --model-dir DIR --input FILE --batch 32 --out VECTORS.safetensors
      one whole job, meant to be timed from outside as a fresh process (import, load, embed,
      write, exit); writes one F32 tensor `embeddings` [n, 384], as `gleaner embed` does.
  torch_peer.py generate --gguf FILE --prompt-file FILE [--gleaner-json FILE] --batches 1,8,64
                         --new-tokens 64
      SmolLM2 via AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) (the `gguf` package
      dequantises the weights to f32), greedy decoding in a plain KV-cache loop. The prompt ids
      are gleaner's (`gleaner generate --json` output in --gleaner-json: the prompt encoded
      without special tokens), else this tokenizer's encoding of the same text. Per batch size,
      as `gleaner bench generate` measures: a cold run of --new-tokens, a run of 1 new token
      (prefill_secs), a run of --new-tokens again (decode_secs = that minus prefill_secs); at
      batch 1 also two teacher-forced verify passes (one forward over prompt + output).

Prints JSON lines on stdout with the field names of gleaner's `bench embed|generate --json` rows,
plus one {"env": ...} line and, for generate, one {"greedy_agree": ...} line. Logs go to stderr.
"""
import argparse
import inspect
import json
import os
import sys
import time

import torch

IMPL = "pytorch-eager-fp32"
MAX_TOKENS = 256  # gleaner's truncation (models/src/tokenize.rs)


def log(msg):
    print(f"torch_peer: {msg}", file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fp32_only():
    # Plain fp32 matmuls: no TF32 (the peer is "fp32", and gleaner's f32 path does not use it).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def env_line(dev, **extra):
    import transformers
    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    try:
        import gguf  # noqa: F401  (only the generate peer needs it)
        info["gguf"] = getattr(gguf, "__version__", "present")
    except ImportError:
        pass
    info.update(extra)
    emit({"env": info})


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def csv_ints(s):
    return [int(x) for x in s.split(",") if x]


# --- MiniLM -----------------------------------------------------------------------------------

def load_minilm(model_dir, dev):
    from tokenizers import Tokenizer
    from transformers import BertModel
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    # The shipped tokenizer.json pads to a fixed 128 and truncates at 128: gleaner does neither.
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False)
    return tok, model.float().to(dev).eval()


@torch.inference_mode()
def embed(tok, model, texts, batch, dev):
    """L2-normalised mean-pooled vectors [n, hidden] on the host, in input order."""
    encs = tok.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(encs[i].ids))
    out = torch.empty(len(texts), model.config.hidden_size, device=dev)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        width = max(len(encs[i].ids) for i in idx)
        ids = [encs[i].ids + [0] * (width - len(encs[i].ids)) for i in idx]
        mask = [[1] * len(encs[i].ids) + [0] * (width - len(encs[i].ids)) for i in idx]
        ids = torch.tensor(ids, dtype=torch.long).to(dev, non_blocking=True)
        mask = torch.tensor(mask, dtype=torch.long).to(dev, non_blocking=True)
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out[torch.tensor(idx, device=dev)] = torch.nn.functional.normalize(v, p=2, dim=1)
    return out.cpu()


def cmd_embed(a):
    dev = device()
    fp32_only()
    tok, model = load_minilm(a.model_dir, dev)
    env_line(dev, attn=getattr(model.config, "_attn_implementation", None))
    texts = read_lines(a.corpus)
    batches = csv_ints(a.batches)
    # CUDA context, cuBLAS handles, allocator: paid once, as gleaner's start-up warm-up pays its own.
    for b in batches:
        embed(tok, model, texts[: 2 * b], b, dev)
    sync(dev)
    for b in batches:
        for pass_ in ("first", "warm"):
            sync(dev)
            t = time.perf_counter()
            embed(tok, model, texts, b, dev)
            sync(dev)
            secs = time.perf_counter() - t
            emit({"implementation": IMPL, "precision": "f32", "batch": b, "pass": pass_,
                  "sentences": len(texts), "secs": secs, "sentences_per_s": len(texts) / secs})
            log(f"embed batch {b} {pass_}: {len(texts) / secs:.1f} sentences/s")


def cmd_embed_job(a):
    from safetensors.torch import save_file
    dev = device()
    fp32_only()
    tok, model = load_minilm(a.model_dir, dev)
    texts = read_lines(a.input)
    v = embed(tok, model, texts, a.batch, dev)
    save_file({"embeddings": v.contiguous()}, a.out,
              metadata={"model": "sentence-transformers/all-MiniLM-L6-v2", "peer": IMPL})
    log(f"embed-job: {len(texts)} sentences -> {a.out}")


# --- SmolLM2 ----------------------------------------------------------------------------------

def load_smollm(gguf_path, dev):
    import transformers
    from transformers import AutoModelForCausalLM
    d, f = os.path.split(os.path.abspath(gguf_path))
    # transformers 5 names it `dtype` (and refuses .float() on a GGUF-loaded model); 4 `torch_dtype`.
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype" if major >= 5 else "torch_dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, **kw)
    return model.to(dev).eval()


def prompt_ids(a, text):
    """(prompt ids, where they come from, the HF tokenizer's ids or None, gleaner's greedy ids)."""
    hf = None
    try:
        from transformers import AutoTokenizer
        d, f = os.path.split(os.path.abspath(a.gguf))
        hf = AutoTokenizer.from_pretrained(d, gguf_file=f)(text, add_special_tokens=False)["input_ids"]
    except Exception as e:  # noqa: BLE001  (the gleaner ids are the ones that matter)
        log(f"HF tokenizer from the GGUF failed: {e}")
    if a.gleaner_json and os.path.exists(a.gleaner_json):
        try:
            with open(a.gleaner_json) as f:
                g = json.loads(f.read().strip().splitlines()[-1])
            return list(g["prompt_ids"]), "gleaner", hf, list(g.get("ids") or [])
        except (ValueError, KeyError, IndexError) as e:
            log(f"{a.gleaner_json} unreadable ({e}); using the HF tokenizer's ids")
    if hf is None:
        sys.exit("torch_peer: no prompt ids (neither gleaner's JSON nor the HF tokenizer)")
    return hf, "hf-tokenizer", hf, []


def forward_kwargs(model):
    """(the name of the KV-cache argument, {logits_to_keep: 1} where supported) of this version:
    transformers 5 renamed past_key_values to cache; only the last position's logits are needed
    while decoding (gleaner computes no others)."""
    params = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    keep = next(({k: 1} for k in ("logits_to_keep", "num_logits_to_keep") if k in params), {})
    return cache, keep


def cache_of(out):
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


@torch.inference_mode()
def greedy(model, ids, n, kw):
    """n greedy tokens for every row of ids [b, p], in a KV-cache loop; [b, n] on the host."""
    cache_name, keep = kw
    out = model(input_ids=ids, use_cache=True, **keep)
    nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
    toks = [nxt]
    for _ in range(n - 1):
        out = model(input_ids=nxt, use_cache=True, **{cache_name: cache_of(out)}, **keep)
        nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
        toks.append(nxt)
    return torch.cat(toks, dim=1).cpu()


@torch.inference_mode()
def verify(model, prompt, outs, dev):
    """Teacher-forced check: one forward over prompt + outs; True when every output token is the
    argmax at its position (what gleaner's verifier decides, without the margin)."""
    ids = torch.tensor([prompt + outs], dtype=torch.long, device=dev)
    logits = model(input_ids=ids, use_cache=False).logits[0]
    top = logits[len(prompt) - 1: len(prompt) + len(outs) - 1].argmax(-1).cpu()
    return bool((top == torch.tensor(outs)).all())


def timed(dev, fn):
    sync(dev)
    t = time.perf_counter()
    r = fn()
    sync(dev)
    return r, time.perf_counter() - t


def cmd_generate(a):
    dev = device()
    fp32_only()
    with open(a.prompt_file, encoding="utf-8") as f:
        text = f.read()
    prompt, source, hf_ids, gleaner_out = prompt_ids(a, text)
    model = load_smollm(a.gguf, dev)
    fwd = forward_kwargs(model)
    env_line(dev, attn=getattr(model.config, "_attn_implementation", None), prompt_ids=source,
             dtypes=sorted({str(p.dtype) for p in model.parameters()}),
             hf_prompt_ids_match=(hf_ids == prompt) if hf_ids is not None else None,
             cache_arg=fwd[0], last_logits_only=bool(fwd[1]))
    n = a.new_tokens
    first_out = None
    for b in csv_ints(a.batches):
        ids = torch.tensor([prompt] * b, dtype=torch.long, device=dev)
        cold, cold_secs = timed(dev, lambda: greedy(model, ids, n, fwd))
        _, prefill = timed(dev, lambda: greedy(model, ids, 1, fwd))
        outs, total = timed(dev, lambda: greedy(model, ids, n, fwd))
        row = {"implementation": IMPL, "precision": "f32", "batch": b, "prompt": len(prompt),
               "prefill_secs": prefill, "new": n, "decode_secs": max(total - prefill, 1e-9),
               "cold_secs": cold_secs, "verify_cold_secs": None, "verify_warm_secs": None,
               "deterministic": bool(torch.equal(cold, outs))}
        if b == 1:
            first_out = outs[0].tolist()
            secs = []
            for _ in range(2):
                ok, s = timed(dev, lambda: verify(model, prompt, first_out, dev))
                secs.append(s)
                row["verify_accepts"] = ok
            row["verify_cold_secs"], row["verify_warm_secs"] = secs
        emit(row)
        log(f"generate batch {b}: prompt {b * len(prompt) / prefill:.1f} tok/s, "
            f"new {b * n / row['decode_secs']:.1f} tok/s")
    if first_out is not None and gleaner_out:
        agree = 0
        for x, y in zip(first_out, gleaner_out):
            if x != y:
                break
            agree += 1
        emit({"greedy_agree": agree, "of": min(len(first_out), len(gleaner_out)),
              "reference": "gleaner generate --backend cpu (quantized-cpu)"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--model-dir", required=True)
    e.add_argument("--corpus", required=True)
    e.add_argument("--batches", default="32,128")
    j = sub.add_parser("embed-job")
    j.add_argument("--model-dir", required=True)
    j.add_argument("--input", required=True)
    j.add_argument("--batch", type=int, default=32)
    j.add_argument("--out", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--gguf", required=True)
    g.add_argument("--prompt-file", required=True)
    g.add_argument("--gleaner-json")
    g.add_argument("--batches", default="1,8,64")
    g.add_argument("--new-tokens", type=int, default=64)
    a = ap.parse_args()
    {"embed": cmd_embed, "embed-job": cmd_embed_job, "generate": cmd_generate}[a.cmd](a)


if __name__ == "__main__":
    main()
