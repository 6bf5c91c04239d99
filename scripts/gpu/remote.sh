#!/usr/bin/env bash
# scripts/gpu/remote.sh G OUT — the GPU machine's half of `scripts/gpu-check` (see its --help).
#
# G is what calls 1-3 unpacked: G/gleaner, G/home/models/all-minilm-l6-v2/, G/smollm.gguf, G/gl/*.deb
# (the Vulkan loader) and G/*.whl (gguf, accelerate). Runs, each step under a timeout, every output into OUT:
#   backends.txt            `gleaner backends` (which adapter wgpu picked)
#   gleaner-embed-P.jsonl   `gleaner bench embed --backends wgpu --precisions P --json` per precision
#                           P on a 16,000-sentence corpus (bench/corpus-1000.txt 16 times), batch 32
#                           and 128
#   cold.jsonl              whole-process times of one 1,000-sentence job: `gleaner embed` per
#                           precision (fresh cwd and cubecl cache; with GPU_CHECK_COLD_AGAIN=1 once
#                           more with the cache it left) and torch_peer.py embed-job
#   vectors-*.npy           the first 200 vectors of each of those jobs (table.py's cosines)
#   torch-embed.jsonl       torch_peer.py embed, same corpus and batches
#   gleaner-greedy.json     `gleaner generate --backend cpu --json`: the prompt ids the peer uses
#   gleaner-generate.jsonl  `gleaner bench generate --backends wgpu --precisions f32,f16 --json`
#   torch-generate.jsonl    torch_peer.py generate, same prompt, batches and token count
#   steps.jsonl, *.err      each step's exit code, seconds and stderr; remote.log
#   table.md                scripts/gpu/table.py OUT: the one table (also printed)
#   results.tar.gz          on the GPU machine (not with GPU_CHECK_LOCAL=1): all of the above in one
#                           archive, and only table.md and remote.log left beside it (the device
#                           tool brings back at most 8 files)
# A failed or timed-out step becomes n/a in the table; the script itself goes on.
#
# Environment:
#   GPU_CHECK_SMALL=1      64 sentences, embed batch 8, generate batch 1 and 8 new tokens (a dry run)
#   GPU_CHECK_LOCAL=1      leave this machine's Vulkan loader alone (`scripts/gpu-check local`)
#   GPU_CHECK_ONLY=embed|generate   run one half (default: all)
#   GPU_CHECK_DEADLINE=480 seconds for the whole script; a step gets at most its cap and what is left
#   GPU_CHECK_PRECISIONS=f32,f16    gleaner's precisions
#   GPU_CHECK_COLD_AGAIN=1 time each gleaner cold job a second time, kernel cache on disk (+~1 min)
#   GPU_CHECK_SLOW=1       multiplies every step's cap (local: 4, for lavapipe)
#   GPU_CHECK_PYTHON=python3        the python with torch (the peer); glue scripts use python3
set -euo pipefail
export LC_ALL=C   # '.' as the decimal point in $EPOCHREALTIME and awk

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
[[ $# -eq 2 ]] || { usage >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[[ -d "$1" ]] || { echo "remote.sh: $1 does not exist: send calls 1-3 of \`scripts/gpu-check pack\` first" >&2; exit 1; }
G="$(cd "$1" && pwd)"
mkdir -p "$2"
OUT="$(cd "$2" && pwd)"

SMALL="${GPU_CHECK_SMALL:-0}"
LOCAL="${GPU_CHECK_LOCAL:-0}"
ONLY="${GPU_CHECK_ONLY:-all}"
DEADLINE="${GPU_CHECK_DEADLINE:-480}"
SLOW="${GPU_CHECK_SLOW:-1}"
PEER_PY="${GPU_CHECK_PYTHON:-python3}"
RESERVE=15   # seconds kept for the table at the end
T0=$SECONDS
GL="$G/gleaner"
MINILM="$G/home/models/all-minilm-l6-v2"
GGUF="$G/smollm.gguf"
VEC="$G/vec"
SUBSET=200   # vectors per job kept for the cosines
mkdir -p "$VEC"
: >"$OUT/steps.jsonl"

log() { printf '[remote.sh %3ds] %s\n' $((SECONDS - T0)) "$*" | tee -a "$OUT/remote.log" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "$SMALL" == 1 ]]; then
    N_JOB=64 N_BENCH=64 EMBED_BATCHES=8 COLD_BATCH=8 GEN_BATCHES=1 NEW=8
else
    N_JOB=1000 N_BENCH=16000 EMBED_BATCHES=32,128 COLD_BATCH=32 GEN_BATCHES=1,8,64 NEW=64
fi
PRECISIONS="${GPU_CHECK_PRECISIONS:-f32,f16}"
COLD_RUNS=1
[[ "${GPU_CHECK_COLD_AGAIN:-0}" == 1 ]] && COLD_RUNS=2

# The table is written however the script ends (a failed step, the deadline, an error here).
finish() {
    local rc=$?
    python3 "$ROOT/scripts/gpu/table.py" "$OUT" >"$OUT/table.md" 2>>"$OUT/remote.log" \
        && cat "$OUT/table.md" || log "table.py failed: see remote.log"
    log "done (rc $rc), results in $OUT"
    # The device tool brings back at most 8 files of OUT: on the GPU machine everything goes
    # into one archive, and only the table and the log stay beside it.
    if [[ "$LOCAL" != 1 ]]; then
        tar -czf "$G/results.tar.gz" -C "$OUT" . \
            && find "$OUT" -mindepth 1 -maxdepth 1 ! -name table.md ! -name remote.log -exec rm -rf {} + \
            && mv "$G/results.tar.gz" "$OUT/" \
            || log "could not bundle OUT into results.tar.gz: only 8 of its files come back"
    fi
}
trap finish EXIT

# run_step NAME CAP STDOUT CMD...: CMD under `timeout` (CAP seconds, or what is left before the
# deadline), stdout to STDOUT, stderr to OUT/NAME.err, {"step","rc","secs"} to steps.jsonl.
# Sets STEP_RC and STEP_SECS (the whole process, start to exit) and never fails the script.
run_step() {
    local name=$1 cap=$2 out=$3 t start
    shift 3
    local left=$((DEADLINE - (SECONDS - T0) - RESERVE))
    STEP_RC=125 STEP_SECS=0
    if ((left < 5)); then
        log "$name: skipped, the deadline (GPU_CHECK_DEADLINE=$DEADLINE) is reached"
        printf '{"step": "%s", "rc": null, "skipped": "deadline"}\n' "$name" >>"$OUT/steps.jsonl"
        return 0
    fi
    cap=$((cap * SLOW))
    t=$((cap < left ? cap : left))
    log "$name (at most ${t}s): $*"
    start=$EPOCHREALTIME
    STEP_RC=0
    timeout -k 5 "$t" "$@" >"$out" 2>"$OUT/$name.err" || STEP_RC=$?
    STEP_SECS=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    printf '{"step": "%s", "rc": %d, "secs": %s, "limit": %d}\n' "$name" "$STEP_RC" "$STEP_SECS" "$t" \
        >>"$OUT/steps.jsonl"
    if ((STEP_RC != 0)); then
        log "$name failed: rc $STEP_RC (124: timed out after ${t}s); last lines of $name.err:"
        tail -n 8 "$OUT/$name.err" | sed 's/^/    /' | tee -a "$OUT/remote.log" >&2
    else
        log "$name: ${STEP_SECS}s"
    fi
    return 0
}

# skip NAME WHY: a step that cannot run here, recorded so the table can say why it is n/a.
skip() {
    log "$1: skipped ($2)"
    printf '{"step": "%s", "rc": null, "skipped": "%s"}\n' "$1" "$2" >>"$OUT/steps.jsonl"
}

# in_dir DIR CMD...: CMD with DIR as its working directory (for `timeout`, which needs a program).
in_dir() { local d=$1; shift; cd "$d" && exec "$@"; }
export -f in_dir

# --- the Vulkan loader -------------------------------------------------------------------------
# The image has NVIDIA's driver and ICD file but maybe no libvulkan: Debian's, unpacked over /.
if [[ "$LOCAL" != 1 ]]; then
    debs=("$G"/gl/*.deb)
    [[ -e "${debs[0]}" ]] || debs=("$ROOT"/.gl/*.deb)
    if [[ -e "${debs[0]}" ]]; then
        for f in "${debs[@]}"; do dpkg -x "$f" /; done
        ldconfig
        log "Vulkan loader: unpacked ${#debs[@]} debs"
    else
        log "no .gl debs: using whatever Vulkan loader the machine has"
    fi
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json \
        /usr/share/vulkan/icd.d/nvidia_icd.json; do
        if [[ -f "$icd" ]]; then export VK_DRIVER_FILES="$icd"; log "VK_DRIVER_FILES=$icd"; break; fi
    done
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
export GLEANER_HOME="$G/home"

[[ -x "$GL" ]] || die "$GL is missing: call 1 (scripts/gpu/unpack.py) did not run"
[[ -f "$MINILM/model.safetensors" ]] || die "$MINILM/model.safetensors is missing: call 1 did not run"
"$GL" --version >"$OUT/version.txt" 2>&1 || true
run_step backends 60 "$OUT/backends.txt" "$GL" backends
cat "$OUT/backends.txt" >&2

# What this binary's flags allow (the Rust side gains --precision(s) and generate --json).
# (The help goes through a variable: `cmd | grep -q` can fail under pipefail when grep quits early.)
has_flag() { local h; h="$("$GL" "${@:2}" --help 2>/dev/null || true)"; [[ "$h" == *"$1"* ]]; }
GEN_PREC_ARGS=() GEN_JSON=() JOB_PRECISIONS=(f32)
EMBED_PRECISIONS=(default)
if has_flag --precisions bench embed; then IFS=, read -r -a EMBED_PRECISIONS <<<"$PRECISIONS"; else
    log "gleaner bench embed has no --precisions: its default precision only"; fi
if has_flag --precisions bench generate; then GEN_PREC_ARGS=(--precisions "$PRECISIONS"); else
    log "gleaner bench generate has no --precisions: f32 only"; fi
if has_flag --json bench generate; then GEN_JSON=(--json); else
    log "gleaner bench generate has no --json: its table goes to gleaner-generate.jsonl as text"; fi
if has_flag --precision embed; then IFS=, read -r -a JOB_PRECISIONS <<<"$PRECISIONS"; else
    log "gleaner embed has no --precision: the cold job runs at its default precision only"; fi

# The peer needs torch and transformers; the wheels carried in .dev3 (gguf, accelerate: what
# transformers' GGUF loader needs) go into G/site, each only where python lacks the package.
HAVE_TORCH=0
if "$PEER_PY" -c 'import torch, transformers, tokenizers, safetensors' 2>/dev/null; then
    HAVE_TORCH=1
    for whl in "$G"/*.whl; do
        [[ -e "$whl" ]] || continue
        mod="$(basename "$whl")"
        mod="${mod%%-*}"
        "$PEER_PY" -c "import $mod" 2>/dev/null && continue
        log "installing $(basename "$whl") into $G/site"
        "$PEER_PY" -m pip install -q --no-index --no-deps --target "$G/site" "$whl" 2>>"$OUT/remote.log" \
            || "$PEER_PY" -m zipfile -e "$whl" "$G/site"   # a pure-python wheel is a zip
    done
    [[ -d "$G/site" ]] && export PYTHONPATH="$G/site${PYTHONPATH:+:$PYTHONPATH}"
    "$PEER_PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
        2>&1 | tee -a "$OUT/remote.log" >&2
else
    log "$PEER_PY has no torch/transformers: the PyTorch columns will be n/a"
fi

# --- corpora ------------------------------------------------------------------------------------
JOB="$G/corpus-job.txt"
BENCH="$G/corpus-bench.txt"
head -n "$N_JOB" "$ROOT/bench/corpus-1000.txt" >"$JOB"
if [[ "$SMALL" == 1 ]]; then cp "$JOB" "$BENCH"; else
    for _ in $(seq 16); do cat "$ROOT/bench/corpus-1000.txt"; done >"$BENCH"
fi
log "corpora: job $(wc -l <"$JOB") sentences, bench $(wc -l <"$BENCH") sentences"

# Gleaner's own processes run in a directory with no Cargo.toml above it and with their own
# caches: gleaner keeps cubecl's compiled kernels and autotune results in GLEANER_HOME/gpu-cache
# (cubecl alone: the workspace's target/, else the user cache), NVIDIA's driver its pipelines in
# its shader cache, and a cold job must find neither the bench's nor an earlier run's. So each
# set of caches has its own home, with the weights linked in.
caches() {
    mkdir -p "$1/nvidia" "$1/home"
    ln -sfn "$G/home/models" "$1/home/models"
    echo "XDG_CACHE_HOME=$1" "__GL_SHADER_DISK_CACHE_PATH=$1/nvidia" "GLEANER_HOME=$1/home"
}
WORK="$G/work"
mkdir -p "$WORK"
read -r -a work_caches <<<"$(caches "$WORK/cache")"
gleaner_env=(env "${work_caches[@]}")

# --- MiniLM -------------------------------------------------------------------------------------
if [[ "$ONLY" == all || "$ONLY" == embed ]]; then
    # One bench process per precision: the bench prints its rows at the end, so a timeout loses
    # only that precision's.
    for prec in "${EMBED_PRECISIONS[@]}"; do
        prec_arg=()
        [[ "$prec" != default ]] && prec_arg=(--precisions "$prec")
        run_step "gleaner-embed-$prec" 240 "$OUT/gleaner-embed-$prec.jsonl" bash -c 'in_dir "$@"' _ "$WORK" \
            "${gleaner_env[@]}" "$GL" bench embed --backends wgpu "${prec_arg[@]}" \
            --batches "$EMBED_BATCHES" --process false --json --corpus "$BENCH"
    done

    # cold_job IMPL PRECISION RUN CMD...: one timed whole process; a row of cold.jsonl.
    cold_job() {
        local impl=$1 prec=$2 run=$3
        shift 3
        run_step "cold-$impl-$prec-$run" 150 /dev/null "$@"
        printf '{"implementation": "%s", "precision": "%s", "run": %d, "sentences": %d, "batch": %d, "secs": %s, "rc": %d}\n' \
            "$impl" "$prec" "$run" "$N_JOB" "$COLD_BATCH" "$STEP_SECS" "$STEP_RC" >>"$OUT/cold.jsonl"
    }
    for prec in "${JOB_PRECISIONS[@]}"; do
        prec_arg=()
        [[ ${#JOB_PRECISIONS[@]} -gt 1 || "$prec" != f32 ]] && prec_arg=(--precision "$prec")
        # Run 1: a fresh cubecl cache (a new worker's first job); run 2 (GPU_CHECK_COLD_AGAIN=1):
        # the same job again with the kernels and autotune results run 1 left on disk.
        for run in $(seq "$COLD_RUNS"); do
            d="$G/cold-$prec"
            [[ $run == 1 ]] && rm -rf "$d" "$VEC/gleaner-$prec.safetensors"
            read -r -a cold_caches <<<"$(caches "$d/cache")"
            cold_job gleaner "$prec" "$run" bash -c 'in_dir "$@"' _ "$d" env "${cold_caches[@]}" \
                "$GL" embed --backend wgpu "${prec_arg[@]}" --batch "$COLD_BATCH" --input "$JOB" \
                --model-dir "$MINILM" --format safetensors --out "$VEC/gleaner-$prec.safetensors"
        done
        [[ -f "$VEC/gleaner-$prec.safetensors" ]] && python3 "$ROOT/scripts/gpu/vecio.py" subset \
            "$VEC/gleaner-$prec.safetensors" "$OUT/vectors-gleaner-$prec.npy" "$SUBSET" >&2 || true
    done

    if [[ "$HAVE_TORCH" == 1 ]]; then
        run_step torch-embed 200 "$OUT/torch-embed.jsonl" "$PEER_PY" "$ROOT/scripts/gpu/torch_peer.py" \
            embed --model-dir "$MINILM" --corpus "$BENCH" --batches "$EMBED_BATCHES"
        rm -f "$VEC/pytorch-f32.safetensors"
        cold_job pytorch f32 1 "$PEER_PY" "$ROOT/scripts/gpu/torch_peer.py" embed-job \
            --model-dir "$MINILM" --input "$JOB" --batch "$COLD_BATCH" --out "$VEC/pytorch-f32.safetensors"
        [[ -f "$VEC/pytorch-f32.safetensors" ]] && python3 "$ROOT/scripts/gpu/vecio.py" subset \
            "$VEC/pytorch-f32.safetensors" "$OUT/vectors-pytorch-f32.npy" "$SUBSET" >&2 || true
    else
        skip torch-embed "no torch"
    fi
fi

# --- SmolLM2 ------------------------------------------------------------------------------------
if [[ "$ONLY" == all || "$ONLY" == generate ]]; then
    [[ -f "$GGUF" ]] || die "$GGUF is missing: call 3 did not reassemble it"
    python3 "$ROOT/scripts/gpu/gen_prompt.py" >"$OUT/prompt.txt"
    # The quantized CPU decoder's greedy output: the exact prompt ids gleaner decodes (the peer
    # uses them) and the tokens the peer's greedy output is compared with.
    run_step gleaner-greedy 90 "$OUT/gleaner-greedy.json" bash -c 'in_dir "$@"' _ "$WORK" \
        "${gleaner_env[@]}" "$GL" generate \
        --backend cpu --greedy --max-tokens "$NEW" --json --model "$GGUF" --prompt "$(cat "$OUT/prompt.txt")"
    run_step gleaner-generate 300 "$OUT/gleaner-generate.jsonl" bash -c 'in_dir "$@"' _ "$WORK" \
        "${gleaner_env[@]}" "$GL" bench generate --backends wgpu "${GEN_PREC_ARGS[@]}" \
        --batches "$GEN_BATCHES" --new-tokens "$NEW" --quantized false "${GEN_JSON[@]}" --model "$GGUF"
    if [[ "$HAVE_TORCH" == 1 ]]; then
        run_step torch-generate 200 "$OUT/torch-generate.jsonl" "$PEER_PY" "$ROOT/scripts/gpu/torch_peer.py" \
            generate --gguf "$GGUF" --prompt-file "$OUT/prompt.txt" --gleaner-json "$OUT/gleaner-greedy.json" \
            --batches "$GEN_BATCHES" --new-tokens "$NEW"
    else
        skip torch-generate "no torch"
    fi
fi

# --- Kernel launches per forward / decoded token (lever bookkeeping; after the timings) -------------
if [[ "$ONLY" == all || "$ONLY" == kernels ]] && has_flag --precisions bench kernels; then
    run_step gleaner-kernels 120 "$OUT/gleaner-kernels.jsonl" bash -c 'in_dir "$@"' _ "$WORK" \
        "${gleaner_env[@]}" "$GL" bench kernels --precisions "$PRECISIONS" --json --model "$GGUF"
fi
