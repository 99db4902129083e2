#!/usr/bin/env bash
# One GPU window: benchmark first, then the campaign until the time is up; everything that
# should come back goes to $OUT as at most 7 files:
#   env.txt (nvidia-smi, torch), bench.jsonl (one JSON line per benchmark), bench.log,
#   campaign.json (the summary), campaign.log (progress), results-<size>.tar.gz (results/<size>/),
#   compile-cache.tar.xz (torch.compile's caches, for the next window; xz: about a quarter of gzip's size).
# Runs on a bare machine with only its preinstalled packages (no install, no network): the
# repository is on PYTHONPATH and the data come from a git-ignored folder the call carries
# (`make gpu-data` fills data/ from ../shared/data). Check it on a CPU at smoke size with
#   OUT=/tmp/w SIZE=smoke DEVICE=cpu BUDGET=300 bash tools/gpu_window.sh
# Settings (environment): BUDGET seconds for the whole command (default 540), SIZE (paper),
# DEVICE (cuda), JOBS runs at once (2; the campaign falls back to one at a time when they do not fit while
# sharing the GPU), ESTIMATE max|expected (expected), BENCH 1|0, BENCH_BEAUTY 1|0,
# BENCH_VARIANTS_ML / BENCH_VARIANTS_BEAUTY (the bench's --variant options), BENCH_LIMIT_ML /
# BENCH_LIMIT_BEAUTY (seconds), BENCH_EXTRA (more bench options), SPEED (the campaign's --speed, e.g.
# tf32=true,fused_adam=true,compile=true,compile_mode=reduce-overhead), COMPILE_CACHE (the folder
# holding torch.compile's caches, default .compile_cache: carry it into the next window to skip most
# of each compilation), COMPILE_CACHE_MAX_MB (15: a bigger packed cache is not sent back) and STACK
# (the campaign's --stack: up to K compatible runs trained as one stack in one worker; default 1),
# WINDOW_ROOT (runs/window): the campaign's output root, git-ignored, so that a second call on the
# same warm machine (BENCH=0) finds what the first one recorded and the runs a deadline stopped
# (their running checkpoints), and resumes them; the committed results/ are read, never written.
# WINDOW_S: the compute seconds the whole window has from this call's start, later calls included
# (default BUDGET): the campaign starts runs that can end in the second call (--fit-within).
# AUTO_SPEED=1 replaces SPEED and STACK by the fastest per-run setting the bench lines of this GPU
# kind show whose run fits WINDOW_S (`python -m fmrec_lib pick-speed`: results/<size>/benchmarks/ and
# this window's lines, kept in $WINDOW_ROOT). A call with BENCH=0 (the window's second call) keeps the
# SPEED and STACK its first call used, whatever it is given, so that the first call's stacks resume.
set -uo pipefail
T0=$(date +%s)
: "${OUT:?set OUT to the folder whose files come back}"
BUDGET=${BUDGET:-540} SIZE=${SIZE:-paper} DEVICE=${DEVICE:-cuda} JOBS=${JOBS:-2} ESTIMATE=${ESTIMATE:-expected}
BENCH=${BENCH:-1} STACK=${STACK:-1} WINDOW_ROOT=${WINDOW_ROOT:-runs/window}
export PYTHONPATH=. PYTHONUNBUFFERED=1 MPLBACKEND=Agg FMREC_DATA_DIR=${FMREC_DATA_DIR:-data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # JOBS worker processes share the CPU cores
mkdir -p "$OUT"
# torch.compile's on-disk caches (Inductor's FX graphs, AOTAutograd, Triton kernels, autotuning) in one
# folder: every worker process of this window shares it, and carried in from the last window it turns
# each compilation into cache hits (same torch, Triton and GPU; torch checks and recompiles otherwise).
COMPILE_CACHE=${COMPILE_CACHE:-.compile_cache}
mkdir -p "$COMPILE_CACHE"
export TORCHINDUCTOR_CACHE_DIR
TORCHINDUCTOR_CACHE_DIR=$(cd "$COMPILE_CACHE" && pwd)
left() { echo $((BUDGET - ($(date +%s) - T0))); }

{ date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"; python -c "import torch, sys; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; git log -1 --oneline 2>/dev/null; \
  python -c "import os; print('compile cache', os.environ['TORCHINDUCTOR_CACHE_DIR'])"; \
  echo "compile cache at start: $(find "$COMPILE_CACHE" -type f | wc -l) files, $(du -sk "$COMPILE_CACHE" | cut -f1) KiB"; \
  echo "window root $WINDOW_ROOT at start: $(find "$WINDOW_ROOT/checkpoints" -name '*.pt' ! -name '*.best.pt' 2>/dev/null | wc -l)" \
    "interrupted runs or stacks to resume, $(find "$WINDOW_ROOT/checkpoints" -name '*.best.pt' 2>/dev/null | wc -l) trained models"; } \
  > "$OUT/env.txt" 2>&1

bench() {  # dataset, timeout seconds, variants...: one process, one JSON line per variant
  local ds=$1 limit=$2; shift 2
  [ "$(left)" -gt $((limit + 150)) ] || { echo "bench $ds skipped: $(left) s left" >> "$OUT/bench.log"; return; }
  timeout "$limit" python -m fmrec_lib bench --dataset "$ds" --device "$DEVICE" --train-steps 30 --sample-users 2000 \
    "$@" ${BENCH_EXTRA:-} >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log" || echo "bench $ds: exit $?" >> "$OUT/bench.log"
}
GRAPHS=tf32=true,fused_adam=true,compile=true,compile_mode=reduce-overhead
if [ "$BENCH" = 1 ]; then
  # what the H100 lines of results/paper/benchmarks/ (2026-11-27) leave open: stacks of CUDA-graphed runs,
  # then the single graphed run (its compilation fills the cache the campaign's single runs then hit); a
  # variant cut by the limit or failing leaves the lines before it
  bench ml-100k "${BENCH_LIMIT_ML:-170}" ${BENCH_VARIANTS_ML:---variant $GRAPHS,stack=4 --variant $GRAPHS,stack=2 \
    --variant $GRAPHS}
  [ "${BENCH_BEAUTY:-1}" = 1 ] && bench beauty "${BENCH_LIMIT_BEAUTY:-60}" ${BENCH_VARIANTS_BEAUTY:---variant "" --variant tf32=true,fused_adam=true}
  # kept on the machine too: $OUT is emptied before the next call, which picks its speed from these lines
  mkdir -p "$WINDOW_ROOT" && [ -e "$OUT/bench.jsonl" ] && cat "$OUT/bench.jsonl" >> "$WINDOW_ROOT/bench.jsonl"
fi

# runs may be planned to end in a later call of this window (WINDOW_S: the compute seconds the whole
# window has from this call's start, later calls included; default BUDGET, this call alone)
deadlines() {
  DEADLINE=$(( $(left) - 25 ))
  FIT=$(( ${WINDOW_S:-$BUDGET} - ($(date +%s) - T0) - 25 ))
  [ "$FIT" -lt "$DEADLINE" ] && FIT=$DEADLINE
  return 0
}
deadlines

# The window's speed settings. A call that benchmarks (BENCH=1) starts a window and chooses them: SPEED
# and STACK as given or, with AUTO_SPEED=1, the fastest per-run setting measured on this kind of GPU (this
# window's bench lines and the committed ones; speed fields and stack size only) whose run fits the
# window. A call that does not (BENCH=0: the window's second call) keeps what the first call chose, kept
# in WINDOW_ROOT/picked.txt, so that the first call's stacks resume.
mkdir -p "$WINDOW_ROOT"
[ "$BENCH" = 1 ] && rm -f "$WINDOW_ROOT/picked.txt"
picked_speed="" how="as given"
if [ "$BENCH" != 1 ] && [ -s "$WINDOW_ROOT/picked.txt" ]; then
  read -r picked_speed picked_stack < "$WINDOW_ROOT/picked.txt" && how="kept from this window's first call"
elif [ "${AUTO_SPEED:-0}" = 1 ]; then
  gpu=$(python -c "import torch; from fmrec_lib.utils import device_name, resolve_device; \
print(device_name(resolve_device('$DEVICE')))" 2>> "$OUT/bench.log")
  earlier=(results/"$SIZE"/benchmarks/*.jsonl)
  [ -e "${earlier[0]}" ] || earlier=()
  [ -e "$WINDOW_ROOT/bench.jsonl" ] && earlier+=("$WINDOW_ROOT/bench.jsonl")  # this window's, both calls
  if [ -n "$gpu" ] && [ "${#earlier[@]}" -gt 0 ] && picked=$(python -m fmrec_lib pick-speed "${earlier[@]}" \
      --device "$gpu" --fit-seconds "$FIT" --size "$SIZE" 2>> "$OUT/bench.log"); then
    read -r picked_speed picked_stack <<< "$picked" && how="fastest on $gpu that fits $FIT s"
  else
    how="AUTO_SPEED found no usable bench line${gpu:+ of $gpu}"
  fi
fi
if [ -n "$picked_speed" ]; then
  SPEED=${picked_speed#-} STACK=$picked_stack
fi
echo "${SPEED:--} $STACK" > "$WINDOW_ROOT/picked.txt"
echo "window settings ($how): SPEED=${SPEED:-} STACK=$STACK" >> "$OUT/bench.log"
deadlines  # the choice took seconds (python, torch, CUDA start-up)

if [ "$DEADLINE" -gt 30 ]; then
  python -m fmrec_lib campaign --size "$SIZE" --device "$DEVICE" --deadline "$DEADLINE" --fit-within "$FIT" \
    --jobs "$JOBS" --output-dir "$WINDOW_ROOT" \
    --epochs-estimate "$ESTIMATE" --stack "$STACK" ${SPEED:+--speed "$SPEED"} --archive "$OUT/results-$SIZE.tar.gz" \
    > "$OUT/campaign.json" 2> "$OUT/campaign.log"
  echo "campaign exit $?" >> "$OUT/campaign.log"
else
  echo "no time left for the campaign" > "$OUT/campaign.log"
fi

# the compile caches go back for the next window, unless they are too big to come back. xz, not gzip: a
# smoke window's 84 MB cache packed to 15.5 MB with gzip (over the cap) and 3.4 MB with xz (2026-11-28)
if [ -n "$(ls -A "$COMPILE_CACHE" 2>/dev/null)" ]; then
  packed="$OUT/compile-cache.tar.xz" packer=""
  if command -v "${XZ:-xz}" > /dev/null; then  # all cores
    tar -cf - -C "$COMPILE_CACHE" . | "${XZ:-xz}" -T0 -6 > "$packed.part"
    status=("${PIPESTATUS[@]}")  # tar 1: a file changed while read (still a usable archive)
    [ "${status[0]}" -le 1 ] && [ "${status[1]}" = 0 ] && packer="xz"
  fi
  if [ -z "$packer" ]; then  # no xz, or it failed: the standard library's lzma, one core
    python -c "import sys, tarfile
with tarfile.open(sys.argv[1], 'w:xz') as tar:
    tar.add(sys.argv[2], arcname='.')" "$packed.part" "$COMPILE_CACHE" && packer="python lzma"
  fi
  if [ -n "$packer" ] && mv "$packed.part" "$packed"; then
    size_kb=$(du -k "$packed" | cut -f1)
    if [ "$size_kb" -gt $(( ${COMPILE_CACHE_MAX_MB:-15} * 1024 )) ]; then
      rm -f "$packed"
      echo "compile cache not sent back: ${size_kb} KiB packed, over ${COMPILE_CACHE_MAX_MB:-15} MiB" >> "$OUT/campaign.log"
    else
      echo "compile cache: ${size_kb} KiB packed in compile-cache.tar.xz ($packer)" >> "$OUT/campaign.log"
    fi
  else
    rm -f "$packed.part"
    echo "compile cache not sent back: packing it failed" >> "$OUT/campaign.log"
  fi
fi
echo "window done after $(( $(date +%s) - T0 )) s" >> "$OUT/campaign.log"
