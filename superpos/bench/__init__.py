"""Benchmarks of the fused kernels against the peers (PyTorch eager, torch.compile, JAX).

    superpos bench --quick                      # CPU smoke test
    superpos bench --workload phase             # on a GPU: every backend, one process, rows appended to bench/results/

workloads.py (what is trained), peers.py (the peer trainers), harness.py (timing and metrics),
report.py (JSON lines, markdown table, plot), cli.py (`superpos bench`). See bench/README.md.
"""
from .workloads import WORKLOADS, Workload, flops_per_sample, get_workload

__all__ = ["WORKLOADS", "Workload", "flops_per_sample", "get_workload", "main"]


def main(argv=None) -> int:
    from .cli import main as _main
    return _main(argv)
