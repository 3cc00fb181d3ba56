#!/usr/bin/env bash
# Everything a lent GPU should run, as ONE device call of at most ~7 minutes (a session has 15 minutes of
# device time in all, machine start included, so a second call can rerun what failed):
#   bash bench/gpu_session.sh            # every step below, most valuable first (7 min of timeouts)
#   bash bench/gpu_session.sh STEP ...   # only these steps (a rerun): info tests small tiled sweep scaling
# Results go to $OUT (the device tool brings that folder back; defaults to bench/results/gpu-session).
# Each step has its own timeout and writes as it goes, so a step that runs long loses only itself.
# Then, on the CPU machine:
#   superpos bench --report $OUT/results.jsonl --readme bench/README.md --plot bench/results/<device>-scaling.png
# and commit $OUT's files under bench/results/ (device, versions and commit are in every row and in session.log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }
run() {  # run SECONDS NAME CMD...: stdout+stderr to $OUT/NAME.txt, exit status logged
    local limit=$1 name=$2; shift 2
    log "start $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    log "end $name: exit $? after $SECONDS s of the session"
}
results="$OUT/results.jsonl"
# an array, not a function: `timeout` runs programs, and a shell function is none (exit 127)
bench=(python -m superpos bench --out "$results" --time-budget 10 --no-measure-peak --table)
# superpos.kernels lives in ./kernels (setup.cfg's package_dir), so PYTHONPATH alone does not find it:
# install the checkout editable (no registry there), else lay out a copy of the package as installed
if ! python -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/session.log" 2>&1 \
        || ! python -c "import superpos.kernels" 2>> "$OUT/session.log"; then
    rm -rf /tmp/superpos-site && mkdir -p /tmp/superpos-site && cp -r superpos /tmp/superpos-site/ \
        && cp -r kernels /tmp/superpos-site/superpos/kernels
    export PYTHONPATH="/tmp/superpos-site${PYTHONPATH:+:$PYTHONPATH}"
fi
python -c "import superpos.kernels, superpos; print('superpos from', superpos.__file__)" 2>&1 | tee -a "$OUT/session.log"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(info tests small tiled sweep scaling)
for step in "${steps[@]}"; do
    case "$step" in
    info)  # device and versions
        { nvidia-smi; git rev-parse HEAD 2>/dev/null || echo "commit: see the session's checkout"
          python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
          python -c "import jax; print('jax', jax.__version__)"; } >> "$OUT/session.log" 2>&1 ;;
    tests)  # every kernel test on the GPU: kernels vs reference at paper sizes, modes and alone-vs-crowd
            # bit-identical, fault isolation, every launched specialization (steps 0, 1, 2), and every model
            # family / data option of both kernels against the reference; JIT compiles spread over 8 workers
        par=$(python -c "import xdist" 2>/dev/null && echo "-n 14")
        # -v: each test's verdict is printed as it ends, so a step cut short still names its failures
        run "${TESTS_S:-120}" tests python -m pytest -v --tb=short -rfE --maxfail=20 -p no:cacheprovider $par \
            tests/test_kernels.py tests/test_kernel_variants.py ;;
    small)  # the tiny-model kernels against torch, torch.compile and JAX
        run 90 bench_small "${bench[@]}" -w intro,phase,phase3 ;;
    tiled)  # the tiled kernels, both precisions, both launch modes beside the automatic choice
        run 100 bench_tiled "${bench[@]}" -w uniform,geometry -b torch,torch-compile,jax,triton,triton-fused ;;
    phase)  # a rerun's shorter small step: the phase grids against the peers that compile fast
        run 60 bench_phase "${bench[@]}" -w phase,phase3 -b triton,jax,torch --time-budget 5 ;;
    geometry)  # a rerun's shorter tiled step
        run 45 bench_geometry "${bench[@]}" -w geometry -b triton,jax,torch --time-budget 5 ;;
    sweep)  # one real sweep end to end through the CLI at paper size (4,000 models, 10,000 steps)
        rm -rf "$OUT/phase_run"
        run 60 sweep_phase_n2m1 bash -c "time python -m superpos run experiments/phase_n2m1.toml --out $OUT/phase_run --no-plot"
        # one file (at most 8 come back): draw the figures from it on the CPU with `superpos plot`
        tar czf "$OUT/phase_run.tgz" -C "$OUT" phase_run && rm -rf "$OUT/phase_run" ;;
    scaling)  # K = 1 .. 1,000,000
        run 45 bench_scaling "${bench[@]}" -w scaling -b triton,torch ;;
    *) echo "unknown step $step (info tests small tiled sweep scaling phase geometry)" >&2; exit 2 ;;
    esac
done
log "done: ${steps[*]}"
