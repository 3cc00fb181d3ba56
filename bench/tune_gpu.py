"""Measure the kernels' block settings on a GPU (bench/gpu_session.sh's `tune` step).

The cost model ranks block settings by static counts, and the first H100 run found its times 1.3-2.7x
short of the measured ones, differently per kernel: this measures the candidates instead. For each
(workload, precision) it times the chosen config and each variant of VARIANTS in one process (CUDA
events around a whole `sp.train` call after a warm-up call; median of 3), and appends one JSON line per
setting to --out with the ratio to the chosen config's time.

    python bench/tune_gpu.py --out $OUT/tune.jsonl [--budget-s 90]
    python bench/tune_gpu.py --warm-only --shard 3/8     # compile one eighth of the settings (one call each)

Compiling dominates (several seconds per setting, one core each): gpu_session.sh first runs 8 --warm-only
shards side by side, which fill Triton's on-disk cache, then the timing run loads every kernel from it.

A variant that fails to compile or launch is a row with its error. Adopt a winner in kernels/configs.py
only after the contract tests pass with it (the summation order follows BG and num_warps).
"""
import argparse
import json
import statistics
import sys
import time

import torch

import superpos as sp
from superpos.bench.harness import git_commit, time_call, versions
from superpos.bench.workloads import get_workload

# (workload, precision, steps timed) -> kernel_config variants ({} is the chosen config)
VARIANTS = {
    # first, what no GPU has timed yet (the budget stops the step where it runs out):
    # tf32x3 on Hopper (tenth session): gz kept beside x, both dW products as wgmmas, uncapped (243
    # registers, two programs per SM). Its scratch is x's and gz's tiles: 60.6 / 34.6 MB live at uniform /
    # geometry (superpos bench --predict, "scratch live MB"), where the H200 measured 13.5 MB hitting L2 and
    # 40.6 MB missing (bench/README.md, "Where the scratch lives"). gz_kept off (x only: 27 / 13.5 MB), BG 8
    # (half the slice: 30 / 17 MB) and both (13.5 / 6.8 MB) time the live set against the model's ranking
    # (predicted, H100 SXM model: uniform 188 / 262 / 412 / 496, geometry 320 / 443 / 678 / 809 ms per 1,000
    # steps: superpos bench --predict --kernel-config '{...}'); the 168 cap: three programs per SM (spills 128 B)
    # x_kept off (2026-11-28): no scratch at all, x drawn again in passes 2 and 3 (more Philox, no L2 misses;
    # the H200's stalls read ~520 MB of DRAM a step for tf32x3's scratch). Predicted raw / calibrated, H100
    # SXM model: uniform tf32x3 (gz_kept off) 341 / 435 against the chosen 188 / 557 (measured 599), tf32
    # 200 / 264 against 153 / 339 (measured 378), geometry tf32x3 554 / 706 vs 320 / 951 (934), tf32 324 / 425
    # vs 246 / 546 (491): it binds on shared memory, not latency, so the two rank by the calibration factors
    # only, which a GPU has to settle. (ieee: 255 registers and 216 B spilled, predicted slower: not timed.)
    ("uniform", "tf32x3", 100): [{}, {"gz_kept": False}, {"gz_kept": False, "x_kept": False}, {"BG": 8},
                                 {"gz_kept": False, "BG": 8}, {"max_registers": 168}, {"num_stages": 2}],
    ("geometry", "tf32x3", 100): [{}, {"gz_kept": False}, {"gz_kept": False, "x_kept": False}, {"BG": 8},
                                  {"gz_kept": False, "BG": 8}],
    # small kernel, tiny path (1 warp, 32 sample groups, 164 registers: 12 warps per SM): more warps per
    # SM (a register cap), more samples per thread (ILP), more warps per model; fewer tiles per tile-loop
    # trip (4 by default; 1 tile: 115 registers, 4 warps a scheduler). Not the instruction cache (the H200's
    # stalls, 2026-11-28: instruction fetch 0.08 per issued instruction); one tile a trip ran 0.976x under
    # ncu (one replay each): time it here. The issue and ALU pipes both nearly fill phase's time.
    ("phase", "ieee", 200): [{}, {"tile_unroll": 1}, {"tile_unroll": 2}, {"max_registers": 128},
                             {"max_registers": 96}, {"BG": 64}, {"BG": 64, "num_warps": 2},
                             {"BG": 64, "max_registers": 128}],
    ("phase3", "ieee", 200): [{}, {"max_registers": 128}, {"BG": 64}, {"BG": 64, "num_warps": 2}],
    # tiled kernels: tile (BG samples x 4), warps and the split kernel's register cap
    # (ieee: Hopper's chosen block is BG 32 at MP = 32 since the 2026-11-27 tune; BG 16 was the one before)
    ("uniform", "ieee", 100): [{}, {"BG": 16}, {"BG": 8}, {"num_warps": 8}, {"BG": 16, "num_warps": 8},
                               {"max_registers": 168}],
    # num_stages 2: Triton pipelines the loads feeding each tl.dot (the H200's profile of tf32: 0.38
    # eligible warps of 2.7, stalled on global loads; the cost model, which prices no load latency across
    # programs, predicts 153 -> 164 for tf32 and 262 -> 297 for tf32x3, spill-free: measure it)
    ("uniform", "tf32", 100): [{}, {"x_kept": False}, {"num_stages": 2}, {"BG": 8}, {"BG": 32}, {"num_warps": 8},
                               {"max_registers": None}],
    ("geometry", "ieee", 100): [{}, {"BG": 16}, {"BG": 8}, {"num_warps": 8}],
    ("geometry", "tf32", 100): [{}, {"x_kept": False}, {"BG": 8}, {"BG": 32}, {"num_warps": 8}],
}


def settings(only):
    for (name, precision, steps), variants in VARIANTS.items():
        if not only or name in only:
            for variant in variants:
                yield name, precision, steps, variant


def warm(only, shard: int, shards: int) -> int:
    for i, (name, precision, steps, variant) in enumerate(settings(only)):
        if i % shards == shard:
            workload = get_workload(name)
            pop = workload.population(workload.models[-1])
            try:  # the very call that is timed: the JIT specializes on its integer arguments' values
                sp.train(pop, workload.train_config(steps), backend="triton", input_precision=precision,
                         kernel_config=variant)
            except Exception as err:  # noqa: BLE001 - the timing run records it
                print(f"{name} {precision} {variant}: {type(err).__name__}", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON-lines file to append to (required unless --warm-only)")
    p.add_argument("--warm-only", action="store_true", help="compile (one untimed call each), time nothing")
    p.add_argument("--shard", default="0/1", help="I/N: only every N-th setting, from the I-th (0-based)")
    p.add_argument("--budget-s", type=float, default=90.0, help="stop starting new measurements after this")
    p.add_argument("--only", nargs="*", default=None, help="workload names to tune (default: all)")
    args = p.parse_args(argv)
    if args.out is None and not args.warm_only:
        p.error("--out is required unless --warm-only")
    shard, shards = (int(v) for v in args.shard.split("/"))
    if args.warm_only:
        return warm(args.only, shard, shards)
    t_start = time.time()
    commit, dirty = git_commit()
    common = {"device": torch.cuda.get_device_name(), "versions": versions(), "commit": commit,
              "commit_dirty": dirty}
    with open(args.out, "a") as out:
        for (name, precision, steps), variants in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            workload = get_workload(name)
            pop = workload.population(workload.models[-1])
            cfg = workload.train_config(steps)
            base = None
            for variant in variants:
                if time.time() - t_start > args.budget_s:
                    print(f"budget spent: stopping before {name} {precision} {variant}", flush=True)
                    return 0
                row = {"workload": name, "precision": precision, "K": len(pop), "steps": steps,
                       "kernel_config": variant, **common}
                try:
                    call = lambda: sp.train(pop, cfg, backend="triton", input_precision=precision,  # noqa: E731
                                            kernel_config=variant)
                    call()  # compile + warm up
                    times = [time_call(call, "cuda") for _ in range(3)]
                    ms = statistics.median(times) * 1e3 * 1000 / steps
                    base = ms if variant == {} else base
                    row.update(status="ok", ms_per_1000_steps=ms, times_s=times,
                               ratio_to_chosen=ms / base if base else None)
                except Exception as err:  # noqa: BLE001 - a variant that fails is a result
                    row.update(status="error", error=f"{type(err).__name__}: {str(err).strip()[:300]}")
                out.write(json.dumps(row, sort_keys=True) + "\n")
                out.flush()
                shown = f"{row['ms_per_1000_steps']:9.2f} ms/1000 steps  x{row['ratio_to_chosen']:.2f}" \
                    if row["status"] == "ok" else row["error"][:120]
                print(f"{name:9s} {precision:7s} {json.dumps(variant):45s} {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
