"""Train benchmark workloads once each on the GPU, for Nsight Compute to profile (bench/gpu_session.sh's
`profile` step): what the cost model assumes (clock, issue rate, stalls, shared-memory conflicts) read
from the hardware instead of inferred from a time.

    ncu --clock-control none -k regex:_train_ ... python bench/profile_workload.py phase:ieee:200 uniform:tf32:2

Each argument is WORKLOAD:PRECISION:STEPS[:SETTING=INT,...] (the workload's own K; settings are a
kernel_config, e.g. phase:ieee:100:tile_unroll=1); the first call of each compiles.
"""
import sys

import torch

import superpos as sp
from superpos.bench.workloads import get_workload


def main(argv) -> int:
    for item in argv:
        name, precision, steps, *settings = item.split(":")
        kernel_config = {}
        for setting in ",".join(settings).split(",") if settings else ():
            key, _, value = setting.partition("=")
            kernel_config[key] = int(value)
        workload = get_workload(name)
        pop = workload.population(workload.models[-1])
        cfg = workload.train_config(int(steps))
        sp.train(pop, cfg, backend="triton", input_precision=precision, kernel_config=kernel_config or None)
        torch.cuda.synchronize()
        print(f"trained {name} ({precision}, K={len(pop)}, {steps} steps, {kernel_config or 'chosen blocks'})",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
