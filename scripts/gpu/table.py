#!/usr/bin/env python3
"""Join what scripts/gpu/remote.sh wrote into one markdown table: gleaner vs PyTorch, with goals.

Usage: table.py OUT [OUT...]
Reads, from each OUT (a later folder's rows replace an earlier one's): gleaner-embed*.jsonl,
torch-embed.jsonl, cold.jsonl, vectors-*.npy, gleaner-generate.jsonl, torch-generate.jsonl,
backends.txt, steps.jsonl. Anything missing or unreadable becomes n/a. Prints the table and notes
on stdout. Stdlib only (python3 >= 3.9).

Rows: MiniLM sentences/s per batch size (the `warm` pass of each), the cold job's whole-process
seconds (ratio = PyTorch's seconds / gleaner's), the worst row cosine of gleaner's job vectors vs
PyTorch's; SmolLM2 new tokens/s per batch size (batch x new / decode_secs), prompt tokens/s at
batch 1 (batch x prompt / prefill_secs), the verifier's teacher-forced check over one batch-1
generation (verify secs / (prefill_secs + decode_secs)), and the largest logit difference the
bench prints between gleaner's backends or precisions. Gleaner's f16 rows are compared with
PyTorch's fp32.
"""
import glob
import json
import math
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vecio  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NA = "n/a"

# Goals of issue 11. Ratios are gleaner's rate over PyTorch's (for the cold job, PyTorch's seconds
# over gleaner's) and must reach the goal; the verify share is gleaner's own and must not exceed it.
GOAL_EMBED_BATCH = {128: 1.5}
GOAL_COLD = 1.5
GOAL_DECODE_BATCH = {1: 1.0, 64: 1.5}
GOAL_PREFILL = 1.0
GOAL_VERIFY = 0.10


def rust_const(rel, name, default):
    """A numeric `pub const NAME: f32 = X;` from the Rust source, so goals follow the code."""
    try:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            m = re.search(r"const\s+%s\s*:\s*f\d+\s*=\s*([0-9.eE+-]+)\s*;" % name, f.read())
        return float(m.group(1)) if m else default
    except OSError:
        return default


EMBED_MIN_COSINE = rust_const("models/src/compare.rs", "EMBED_MIN_COSINE", None)
GENERATE_MARGIN = rust_const("models/src/smollm/verify.rs", "GENERATE_MARGIN", None)


def jsonl(dirs, pattern):
    """Every JSON object of every file DIR/pattern (a glob), in order; other lines (a text table)
    are skipped."""
    rows = []
    for path in (p for d in dirs for p in sorted(glob.glob(os.path.join(d, pattern)))):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("{"):
                        try:
                            obj = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(obj, dict):
                            rows.append(obj)
        except OSError:
            pass
    return rows


def text(dirs, name):
    out = ""
    for d in dirs:
        try:
            with open(os.path.join(d, name), encoding="utf-8", errors="replace") as f:
                out += f.read()
        except OSError:
            pass
    return out


def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def prec(row):
    return str(row.get("precision") or "f32")


def is_gleaner(row):
    return str(row.get("implementation", "")).startswith("gleaner")


def precision_order(ps):
    order = {"f32": 0, "f16": 1, "bf16": 2}
    return sorted(set(ps), key=lambda p: (order.get(p, 9), p))


# --- formatting ---------------------------------------------------------------------------------

def fmt_rate(x):
    if x is None:
        return NA
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def fmt_secs(x):
    return NA if x is None else (f"{x:.2f} s" if x >= 1 else f"{x:.3f} s")


def fmt_ratio(x):
    return NA if x is None else f"{x:.2f}×"


def fmt3(x):
    return NA if x is None else f"{x:.3f}"


def div(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def met(value, goal, kind="min"):
    if goal is None:
        return "—"
    if value is None:
        return NA
    ok = {"min": value >= goal, "max": value <= goal, "below": value < goal}[kind]
    return "yes" if ok else "no"


# --- MiniLM -------------------------------------------------------------------------------------

def embed_rate(rows, batch, p=None, gleaner=True):
    """sentences/s of the `warm` pass at this batch (gleaner: this precision); the run over the
    most sentences wins, then the later one (one implementation per side is expected)."""
    best = None
    for r in rows:
        if is_gleaner(r) != gleaner or r.get("batch") != batch or r.get("pass", "warm") != "warm":
            continue
        if p is not None and prec(r) != p:
            continue
        rate = num(r.get("sentences_per_s")) or div(num(r.get("sentences")), num(r.get("secs")))
        if rate is None:
            continue
        n = num(r.get("sentences")) or 0
        if best is None or n >= best[0]:
            best = (n, rate)
    return best[1] if best else None


def cold_secs(rows, impl, p, run=1):
    found = None
    for r in rows:
        if r.get("implementation") == impl and prec(r) == p and r.get("run", 1) == run \
                and r.get("rc") == 0:
            found = num(r.get("secs"))
    return found


def latest(dirs, name):
    """DIR/name of the last DIR that has it (a later folder replaces an earlier one), or None."""
    found = [os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))]
    return found[-1] if found else None


def worst_cosine(dirs, p):
    g, t = latest(dirs, f"vectors-gleaner-{p}.npy"), latest(dirs, "vectors-pytorch-f32.npy")
    if not g or not t:
        return None, 0
    try:
        return vecio.min_cosine(vecio.read_npy(g), vecio.read_npy(t))
    except (OSError, ValueError) as e:
        print(f"table.py: cosine of {g} vs {t}: {e}", file=sys.stderr)
        return None, 0


# --- SmolLM2 ------------------------------------------------------------------------------------

def gen_row(rows, batch, p=None, gleaner=True):
    found = None
    for r in rows:
        if "decode_secs" not in r or is_gleaner(r) != gleaner or r.get("batch") != batch:
            continue
        if p is None or prec(r) == p:
            found = r
    return found


def decode_rate(r):
    if not r:
        return None
    return div((num(r.get("batch")) or 0) * (num(r.get("new")) or 0), num(r.get("decode_secs")))


def prefill_rate(r):
    if not r:
        return None
    return div((num(r.get("batch")) or 0) * (num(r.get("prompt")) or 0), num(r.get("prefill_secs")))


def verify_ratio(r, which):
    if not r:
        return None
    v = num(r.get(f"verify_{which}_secs"))
    if v is None and isinstance(r.get("verify_secs"), list) and len(r["verify_secs"]) == 2:
        v = num(r["verify_secs"][0 if which == "cold" else 1])
    pre, dec = num(r.get("prefill_secs")), num(r.get("decode_secs"))
    return div(v, pre + dec) if pre is not None and dec is not None else None


def worst_logit_gap(calib, raw):
    """The largest max_logit_diff of the calibration objects, else of the bench's text lines."""
    diffs = [num(c.get("max_logit_diff")) for c in calib]
    diffs = [d for d in diffs if d is not None]
    if not diffs:
        diffs = [float(m) for m in re.findall(r"max \|logit difference\| ([0-9.eE+-]+)", raw)]
    return max(diffs) if diffs else None


# --- the table ----------------------------------------------------------------------------------

def build(dirs):
    g_embed = jsonl(dirs, "gleaner-embed*.jsonl")
    t_embed = jsonl(dirs, "torch-embed.jsonl")
    cold = jsonl(dirs, "cold.jsonl")
    g_gen_all = jsonl(dirs, "gleaner-generate.jsonl")
    g_gen = [r for r in g_gen_all if "decode_secs" in r]
    calib = [r for r in g_gen_all if "calibration" in r or "max_logit_diff" in r]
    t_gen_all = jsonl(dirs, "torch-generate.jsonl")
    t_gen = [r for r in t_gen_all if "decode_secs" in r]
    steps = jsonl(dirs, "steps.jsonl")

    # f32 and f16 always (a missing one shows as n/a), and any other precision the rows name.
    precs = precision_order(["f32", "f16"] + [prec(r) for r in g_embed + g_gen + cold
                                              if is_gleaner(r)])
    embed_batches = sorted({r["batch"] for r in g_embed + t_embed if isinstance(r.get("batch"), int)}) \
        or [32, 128]
    gen_batches = sorted({r["batch"] for r in g_gen + t_gen if isinstance(r.get("batch"), int)}) \
        or [1, 8, 64]
    n_job = next((r.get("sentences") for r in cold if r.get("sentences")), 1000)

    rows = []  # (measure, gleaner, pytorch, ratio, goal, met)

    def add(measure, g, t, ratio, goal, ok):
        rows.append((measure, g, t, ratio, goal, ok))

    for b in embed_batches:
        t = embed_rate(t_embed, b, gleaner=False)
        goal = GOAL_EMBED_BATCH.get(b)
        for p in precs:
            g = embed_rate(g_embed, b, p)
            r = div(g, t)
            add(f"MiniLM batch {b}, sentences/s ({p})", fmt_rate(g), fmt_rate(t), fmt_ratio(r),
                f"≥ {goal}×" if goal else "—", met(r, goal))
    t_cold = cold_secs(cold, "pytorch", "f32")
    for p in precs:
        g = cold_secs(cold, "gleaner", p)
        r = div(t_cold, g)
        add(f"MiniLM cold {n_job:,}-sentence job, whole process ({p})", fmt_secs(g), fmt_secs(t_cold),
            fmt_ratio(r), f"≥ {GOAL_COLD}×", met(r, GOAL_COLD))
    for p in precs if any(r.get("run") == 2 for r in cold) else ():
        g = cold_secs(cold, "gleaner", p, run=2)
        add(f"MiniLM same job again, kernel cache on disk ({p})", fmt_secs(g), fmt_secs(t_cold),
            fmt_ratio(div(t_cold, g)), "—", "—")
    for p in precs:
        c, n = worst_cosine(dirs, p)
        add(f"MiniLM worst cosine vs PyTorch, {n or 'the'} job vectors ({p})",
            NA if c is None else f"{c:.6f}", "reference", "—",
            NA if EMBED_MIN_COSINE is None else f"≥ {EMBED_MIN_COSINE}", met(c, EMBED_MIN_COSINE))

    for b in gen_batches:
        t = decode_rate(gen_row(t_gen, b, gleaner=False))
        goal = GOAL_DECODE_BATCH.get(b)
        for p in precs:
            g = decode_rate(gen_row(g_gen, b, p))
            r = div(g, t)
            add(f"SmolLM2 decode batch {b}, new tokens/s ({p})", fmt_rate(g), fmt_rate(t),
                fmt_ratio(r), f"≥ {goal}×" if goal else "—", met(r, goal))
    t = prefill_rate(gen_row(t_gen, 1, gleaner=False))
    for p in precs:
        g = prefill_rate(gen_row(g_gen, 1, p))
        r = div(g, t)
        add(f"SmolLM2 prefill batch 1, prompt tokens/s ({p})", fmt_rate(g), fmt_rate(t), fmt_ratio(r),
            f"≥ {GOAL_PREFILL}×", met(r, GOAL_PREFILL))
    for which, label, goal in (("warm", "second check", GOAL_VERIFY), ("cold", "first check", None)):
        t = verify_ratio(gen_row(t_gen, 1, gleaner=False), which)
        for p in precs:
            g = verify_ratio(gen_row(g_gen, 1, p), which)
            add(f"SmolLM2 verify / generate, batch 1, {label} ({p})", fmt3(g), fmt3(t), "—",
                f"≤ {goal:.2f}" if goal else "—", met(g, goal, "max"))
    gap = worst_logit_gap(calib, text(dirs, "gleaner-generate.jsonl"))
    add("SmolLM2 worst logit difference between gleaner's runs (bench calibration)",
        NA if gap is None else f"{gap:.2e}", "—", "—",
        NA if GENERATE_MARGIN is None else f"< {GENERATE_MARGIN} (verifier margin)",
        met(gap, GENERATE_MARGIN, "below"))

    out = ["| measure | gleaner | PyTorch | ratio | goal | met |",
           "|---|---:|---:|---:|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    out += notes(dirs, t_gen_all, calib, steps)
    return "\n".join(out) + "\n"


def notes(dirs, t_gen_all, calib, steps):
    n = []
    adapter = [ln for ln in text(dirs, "backends.txt").splitlines() if ln.startswith(("auto:", "wgpu adapter"))]
    n.append("- gleaner: " + ("; ".join(adapter) if adapter else "adapter n/a (backends.txt missing)"))
    shown = {}
    for e in (r["env"] for r in jsonl(dirs, "torch-embed.jsonl") + t_gen_all if isinstance(r.get("env"), dict)):
        new = {k: v for k, v in e.items() if shown.get(k, object()) != v}
        if new:
            n.append(("- PyTorch: " if not shown else "- PyTorch (SmolLM2): ")
                     + ", ".join(f"{k} {v}" for k, v in new.items()))
        shown.update(e)
    f32, f16 = latest(dirs, "vectors-gleaner-f32.npy"), latest(dirs, "vectors-gleaner-f16.npy")
    if f32 and f16:
        try:
            c, rows = vecio.min_cosine(vecio.read_npy(f32), vecio.read_npy(f16))
            n.append(f"- gleaner f16 vs f32 job vectors: worst cosine {c:.6f} over {rows} rows")
        except (OSError, ValueError) as e:
            n.append(f"- gleaner f16 vs f32 job vectors: unreadable ({e})")
    for r in t_gen_all:
        if "greedy_agree" in r:
            n.append(f"- PyTorch's greedy tokens equal {r['greedy_agree']} of the first {r.get('of')} "
                     f"of {r.get('reference', 'gleaner')}")
        if r.get("deterministic") is False:
            n.append(f"- PyTorch batch {r.get('batch')}: two greedy runs gave different tokens")
        if r.get("verify_accepts") is False:
            n.append("- PyTorch's teacher-forced pass disagrees with its own greedy output")
    for c in calib:
        if "calibration" in c:
            n.append(f"- bench calibration: {c['calibration']}"
                     + (f" (max_logit_diff {c['max_logit_diff']})" if "max_logit_diff" in c else ""))
    for s in steps:
        if s.get("skipped"):
            n.append(f"- step {s.get('step')}: skipped ({s['skipped']})")
        elif s.get("rc") not in (0, None):
            why = "timed out" if s["rc"] in (124, 137) else "failed"
            n.append(f"- step {s.get('step')}: {why} (rc {s['rc']}, {s.get('secs')} s); see {s.get('step')}.err")
    n.append("- ratio: gleaner / PyTorch (for seconds: PyTorch / gleaner); PyTorch is eager fp32 in every "
             "row; n/a: not measured or not readable")
    return n


def main():
    dirs = sys.argv[1:]
    if not dirs or any(d in ("-h", "--help") for d in dirs):
        print(__doc__)
        sys.exit(0 if dirs else 2)
    sys.stdout.write(build(dirs))


if __name__ == "__main__":
    main()
