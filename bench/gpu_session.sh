#!/usr/bin/env bash
# Everything a lent GPU should run, in two parts that each fit one 10-minute device call:
#   bash bench/gpu_session.sh 1   # device info, the whole test suite on the GPU, intro/uniform/geometry
#   bash bench/gpu_session.sh 2   # phase, phase3 and scaling
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
    run 240 tests python -m pytest -q -x -p no:cacheprovider
    run 90 bench_intro python -m superpos bench -w intro --out "$results" --time-budget 20 --table
    run 150 bench_uniform python -m superpos bench -w uniform --out "$results" --time-budget 20 --table
    run 90 bench_geometry python -m superpos bench -w geometry --out "$results" --time-budget 20 --table
    ;;
2)
    run 180 bench_phase python -m superpos bench -w phase,phase3 --out "$results" --time-budget 20 --no-measure-peak --table
    run 300 bench_scaling python -m superpos bench -w scaling --out "$results" --time-budget 20 --no-measure-peak --table
    ;;
*) echo "usage: bash bench/gpu_session.sh 1|2" >&2; exit 2 ;;
esac
log "done part ${1:-1}"
