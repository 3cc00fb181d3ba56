"""The H200's n=400 ieee accuracy failure, reproduced on the CPU without a kernel: the float32 reference
trainer with the kernels' former AdamW arithmetic (1 - beta1, 1 - beta2 computed in float32 from the
rounded betas: 1 - fp32(0.999) is 1.3e-5 short) against the float64 oracle, beside the plain float32
reference, after 50 steps on the at-scale test's population (n=400, m=30).

    python bench/adamw_bias_check.py --models 16
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import superpos as sp  # noqa: E402
from accuracy_trace import distances, population  # noqa: E402
from superpos.reference import train_torch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    pop = population(sp, np, 400, 30, args.models, False)
    cfg = sp.TrainConfig(steps=args.steps, batch_size=1024, log_every=10)
    oracle = train_torch(pop, cfg, dtype=torch.float64)
    table = sp.TrainConfig.adamw_constants

    def float32_complements(self, dtype=torch.float32):  # the former kernels' 1 - beta
        t = table(self, dtype)
        if dtype == torch.float32:
            t[:, 3:] = 1.0 - torch.tensor(self.betas, dtype=torch.float32)
        return t
    runs = {"float32 reference": train_torch(pop, cfg)}
    sp.TrainConfig.adamw_constants = float32_complements
    try:
        runs["reference, 1 - beta in float32"] = train_torch(pop, cfg)
    finally:
        sp.TrainConfig.adamw_constants = table
    for name, res in runs.items():
        e = distances(torch, res, oracle)
        print(f"{name:32s} from the float64 oracle after {args.steps} steps: median {np.median(e):.3g}, "
              f"p90 {np.quantile(e, 0.9):.3g}, min {e.min():.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
