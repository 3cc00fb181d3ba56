"""Train benchmark workloads once each on the GPU, for Nsight Compute to profile (bench/gpu_session.sh's
`profile` step): what the cost model assumes (clock, issue rate, stalls, shared-memory conflicts) read
from the hardware instead of inferred from a time.

    ncu --clock-control none -k regex:_train_ ... python bench/profile_workload.py phase:ieee:200 uniform:tf32:2

Each argument is WORKLOAD:PRECISION:STEPS (the workload's own K); the first call of each compiles.
"""
import sys

import torch

import superpos as sp
from superpos.bench.workloads import get_workload


def main(argv) -> int:
    for item in argv:
        name, precision, steps = item.split(":")
        workload = get_workload(name)
        pop = workload.population(workload.models[-1])
        cfg = workload.train_config(int(steps))
        sp.train(pop, cfg, backend="triton", input_precision=precision)
        torch.cuda.synchronize()
        print(f"trained {name} ({precision}, K={len(pop)}, {steps} steps)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
