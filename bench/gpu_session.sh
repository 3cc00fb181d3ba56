#!/usr/bin/env bash
# Everything a lent GPU should run, in parts that each fit one device call (a session has ~10 minutes of
# command time in all, so part 1 is the one that matters most):
#   bash bench/gpu_session.sh 1   # device info, the kernel and bench tests on the GPU, intro and uniform (~6 min)
#   bash bench/gpu_session.sh 2   # geometry, phase and phase3 (~4 min)
#   bash bench/gpu_session.sh 3   # scaling, K = 1 .. 1,000,000
# Results go to $OUT (the device tool brings that folder back; defaults to bench/results/gpu-session).
# Every step has its own timeout and writes as it goes, so a step that runs long loses only itself.
# Then, on the CPU machine: superpos bench --report $OUT/*.jsonl --readme bench/README.md --plot ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-session}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }
run() {  # run SECONDS NAME CMD...: stdout+stderr to $OUT/NAME.txt, exit status logged
    local limit=$1 name=$2; shift 2
    log "start $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    log "end $name: exit $?"
}
results="$OUT/results.jsonl"
case "${1:-1}" in
1)
    { nvidia-smi; git rev-parse HEAD; python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
      python -c "import jax; print('jax', jax.__version__)"; } > "$OUT/device.txt" 2>&1
    run 180 tests python -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_bench.py
    run 60 bench_intro python -m superpos bench -w intro --out "$results" --time-budget 15 --table
    run 150 bench_uniform python -m superpos bench -w uniform -b torch,torch-compile,jax,triton,triton-fused --out "$results" --time-budget 15 --table
    ;;
2)
    run 120 bench_geometry python -m superpos bench -w geometry -b torch,torch-compile,jax,triton,triton-fused --out "$results" --time-budget 15 --no-measure-peak --table
    run 150 bench_phase python -m superpos bench -w phase,phase3 --out "$results" --time-budget 15 --no-measure-peak --table
    ;;
3)
    run 420 bench_scaling python -m superpos bench -w scaling --out "$results" --time-budget 15 --no-measure-peak --table
    ;;
*) echo "usage: bash bench/gpu_session.sh 1|2|3" >&2; exit 2 ;;
esac
log "done part ${1:-1}"
