"""Time the triton backend of whatever `superpos` is importable, for a before/after comparison on one GPU
(bench/gpu_session.sh's `before` step runs it on an old commit's package and on this checkout, one
process each, on the same warm machine).

    python bench/before_after.py --label after --out $OUT/before_after.jsonl phase:ieee:200 uniform:tf32:100

Each argument is WORKLOAD:PRECISION:STEPS at the workload's own K; one untimed call (compiles), then the
median of 3 whole `sp.train` calls by CUDA events. Only the API every version since the kernels-as-launched
fixes has (workloads, sp.train), so an old package runs it unchanged. --device cpu with --models runs
it under TRITON_INTERPRET=1 as a smoke test.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

import superpos as sp
from superpos.bench.harness import time_call  # as old as the kernels-as-launched fixes
from superpos.bench.workloads import get_workload


def package_commit() -> str | None:
    root = Path(sp.__file__).resolve().parents[1]
    marker = root / "COMMIT"  # written by gpu_session.sh where the package is a copy without .git
    if marker.exists():
        return marker.read_text().strip()
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("items", nargs="+", help="WORKLOAD:PRECISION:STEPS")
    p.add_argument("--label", required=True, help="before or after")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", type=int, default=None, help="K (default: the workload's)")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    commit = package_commit()
    with open(args.out, "a") as out:
        for item in args.items:
            name, precision, steps = item.split(":")
            workload = get_workload(name)
            pop = workload.population(args.models or workload.models[-1])
            cfg = workload.train_config(int(steps))
            row = {"label": args.label, "workload": name, "precision": precision, "K": len(pop),
                   "steps": int(steps), "package": str(Path(sp.__file__).resolve().parent), "commit": commit,
                   "device": torch.cuda.get_device_name() if cuda else "cpu", "triton_precision": precision}
            try:
                call = lambda: sp.train(pop, cfg, backend="triton", device=args.device,  # noqa: E731
                                        input_precision=precision)
                call()
                times = [time_call(call, args.device) for _ in range(3)]
                row.update(status="ok", times_s=times,
                           ms_per_1000_steps=statistics.median(times) * 1e3 * 1000 / int(steps))
                shown = f"{row['ms_per_1000_steps']:10.2f} ms/1000 steps"
            except Exception as err:  # noqa: BLE001 - an old package may lack a precision: a result
                row.update(status="error", error=f"{type(err).__name__}: {str(err).strip()[:300]}")
                shown = row["error"][:120]
            out.write(json.dumps(row, sort_keys=True) + "\n")
            out.flush()
            print(f"{args.label:6s} {(commit or '?')[:7]} {name:9s} {precision:7s} {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
