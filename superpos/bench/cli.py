"""`superpos bench`: run benchmark workloads on every backend in one process, append JSON lines.

    superpos bench [--workload W] [--backend B] [--quick] [--steps N] [--repeats R] [--out FILE]
    superpos bench --report FILE.jsonl [--readme bench/README.md] [--plot OUT.png]
    superpos bench --predict [--workload W] [--precision P] [--gpu h100-sxm|h200] [--json] [--readme README]

Lists (W, B, --precision, --models) take comma-separated values. Without --quick a CUDA device is
needed; --quick runs on the CPU with tiny K and steps and no triton (a CI smoke test).
"""
from __future__ import annotations

import argparse
import sys

PROG = "superpos bench"
QUICK_RESULTS_DIR = "runs/bench"  # --quick results are a smoke test: never into the tracked bench/results


def _list(text: str) -> list:
    values = [s.strip() for s in text.split(",") if s.strip()]
    if not values:  # "--workload ," must not mean "all"
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"--time-budget must be a number of seconds in (0, inf), got {text!r}")
    return value


def _ints(name: str):
    def parse(text: str) -> list:
        try:
            values = [int(s.replace("_", "")) for s in _list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be comma-separated integers, got {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{name} must be integers >= 1, got {text!r}")
        return values
    return parse


def _positive(name: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value
    return parse


class UsageError(ValueError):
    """A bad command line (reported as one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from .harness import BACKENDS
    from .workloads import WORKLOADS
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="workloads: " + "; ".join(f"{w.name} (n={w.n}, m={w.m}, K={','.join(map(str, w.models))}, "
                                                                 f"{w.steps} steps)" for w in WORKLOADS.values()))
    p.add_argument("--workload", "-w", type=_list, default=None,
                   help=f"comma-separated workloads (default: all): {', '.join(WORKLOADS)}")
    p.add_argument("--backend", "-b", type=_list, default=None,
                   help=f"comma-separated backends (default: the peers available, plus triton on CUDA): "
                        f"{', '.join(BACKENDS)}")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny K and steps, no triton")
    p.add_argument("--steps", type=_positive("--steps"), default=None, help="timed steps per training call")
    p.add_argument("--repeats", type=_positive("--repeats"), default=None,
                   help="timed calls per measurement (default 3; 2 with --quick)")
    p.add_argument("--warmup", type=_positive("--warmup", 0), default=1, help="untimed calls first (default 1)")
    p.add_argument("--precision", type=_list, default=None,
                   help="matmul precisions, ieee and/or tf32 (default: the workload's on CUDA, ieee on the CPU)")
    p.add_argument("--models", "-K", type=_ints("--models"), default=None,
                   help="override the workload's model counts K (comma-separated)")
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--out", default=None,
                   help="JSON-lines file to append to (default: bench/results/<device>.jsonl; with --quick "
                        f"{QUICK_RESULTS_DIR}/cpu-quick.jsonl, untracked)")
    p.add_argument("--no-measure-peak", dest="measure_peak", action="store_false",
                   help="skip measuring the FP32 matmul peak")
    p.add_argument("--time-budget", type=_seconds, default=120.0,
                   help="seconds of timed calls per measurement before repeats are cut (default 120)")
    p.add_argument("--threads", type=_positive("--threads"), default=None,
                   help="torch CPU threads for the run (default: torch's; 1 with --quick)")
    p.add_argument("--table", action="store_true", help="print the markdown table of this run at the end")
    p.add_argument("--report", nargs="+", default=None, metavar="RESULTS",
                   help="no benchmark: build the table (and --plot) from these results files")
    p.add_argument("--readme", default=None, help="with --report: replace the table in this README")
    p.add_argument("--plot", default=None, help="write the log-log throughput-vs-K plot (PNG) here")
    p.add_argument("--plot-workload", default="scaling", help="workload the plot draws (default scaling)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--predict", action="store_true",
                   help="no GPU: predict each workload's speed from the kernels' SASS (the cost model), append "
                        "rows to bench/results/predicted.jsonl (--out to choose) and print a table")
    p.add_argument("--json", action="store_true", help="with --predict: print one JSON object per line")
    p.add_argument("--gpu", default="h100-sxm", help="with --predict: the GPU modelled, h100-sxm (default) or h200")
    p.add_argument("--lines", type=_positive("--lines"), default=None, metavar="N",
                   help="with --predict: instead of the table, the N source lines of each kernel that need the "
                        "most cycles on their busiest resource (issue, FP32, ALU, shared memory...), per model-step")
    p.add_argument("--kernel-config", default=None, metavar="JSON",
                   help="with --predict: hand-set blocks instead of the chosen ones, as the GPU's tune step times "
                        "them (bench/tune_gpu.py), e.g. '{\"gz_kept\": false, \"BG\": 8}'")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:  # --help
            return int(exit_.code or 0)
        return _run(args)
    except (ValueError, OSError) as err:  # bad arguments or values, a missing file: one line, exit code 2
        if isinstance(err, OSError) and err.strerror and err.filename:
            err = f"{err.strerror}: {err.filename}"
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from . import report as rep
    from .workloads import PREDICT_ONLY, WORKLOADS, get_workload

    if args.list:
        for w in WORKLOADS.values():
            print(f"{w.name:9s} n={w.n:<4d} m={w.m:<3d} K={','.join(map(str, w.models)):<40s} steps={w.steps:<6d} "
                  f"{w.description}")
        return 0
    if args.report:
        return rep.report(args.report, readme=args.readme, plot=args.plot, plot_workload=args.plot_workload)
    if args.predict:
        return _predict(args, [get_workload(w) for w in (args.workload or list(WORKLOADS) + list(PREDICT_ONLY))])
    if args.json or args.gpu != "h100-sxm" or args.kernel_config:
        raise ValueError("--json, --gpu and --kernel-config go with --predict")
    if args.readme:
        raise ValueError("--readme goes with --report")

    import torch

    from .harness import BACKENDS, TRITON_SPLIT, device_info, run

    workloads = [get_workload(w) for w in (args.workload or list(WORKLOADS))]
    for w in workloads:
        if w.name in PREDICT_ONLY:
            raise ValueError(f"workload {w.name!r} is for --predict only (the peers train the plain model)")
    for b in args.backend or ():
        if b not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {b!r}")
    _check_precisions(args.precision)
    device = args.device
    if args.quick:
        if device not in (None, "cpu"):
            raise ValueError("--quick runs on the CPU; leave --device out")
        if args.backend and any(b in TRITON_SPLIT for b in args.backend):
            raise ValueError("--quick runs no triton (it needs a GPU)")
        device = "cpu"
    elif device is None:
        if not torch.cuda.is_available():
            raise ValueError("full benchmark runs need a CUDA device: use --quick for the CPU smoke test "
                             "(or --device cpu to force the full workloads on the CPU)")
        device = "cuda"
    out = args.out or rep.default_results_file(device_info(device)["device"], args.quick)
    if args.out is None and args.quick:
        from pathlib import Path
        out = Path(QUICK_RESULTS_DIR) / Path(out).name
    rows = run(workloads, args.backend, device=device, quick=args.quick, steps=args.steps, repeats=args.repeats,
               warmup=args.warmup, precisions=args.precision, models=args.models,
               measure_peak=args.measure_peak, time_budget_s=args.time_budget,
               threads=args.threads if args.threads or not args.quick else 1,
               on_row=lambda row: rep.append_rows(out, [row]))  # as measured: a run cut short keeps them
    print(f"{len(rows)} result rows appended to {out}", file=sys.stderr)
    if args.table:
        print(rep.markdown_table(rows))
    if args.plot:
        print(f"plot written to {rep.plot_throughput(rep.load_rows(out), args.plot, args.plot_workload)}",
              file=sys.stderr)
    failed = [r for r in rows if r["status"] == "error"]
    return 1 if failed else 0


def _check_precisions(precisions, allowed=("ieee", "tf32")) -> None:
    for prec in precisions or ():
        if prec not in allowed:
            raise ValueError(f"precision must be one of {', '.join(allowed)}, got {prec!r}")


def _predict(args, workloads) -> int:
    import json

    from . import predict as pr
    from .costmodel import DEVICES
    if args.gpu not in DEVICES:
        raise ValueError(f"--gpu must be one of {', '.join(DEVICES)}, got {args.gpu!r}")
    from ..kernels.configs import PRECISIONS
    _check_precisions(args.precision, PRECISIONS)
    args.kernel_config = _kernel_config(args.kernel_config)
    if args.kernel_config and args.readme:
        raise ValueError("--readme takes the chosen blocks' table: leave --kernel-config out")
    if args.lines:
        return _predict_lines(args, workloads)
    rows = pr.predict_all(workloads, args.precision, args.gpu, args.models, args.kernel_config)
    out = pr.append_rows(args.out or pr.default_file(), rows)
    print(f"{len(rows)} predicted rows appended to {out}", file=sys.stderr)
    if args.readme:
        print(f"predicted table written to {pr.update_readme(args.readme, rows)}", file=sys.stderr)
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:  # measured beside the chosen blocks only (the bench times those)
        print(pr.markdown_table(rows, {} if args.kernel_config else pr.measured_ms(rows)))
    return 0


def _kernel_config(text: str | None) -> dict | None:
    """--kernel-config's JSON object (its keys and values are checked by kernels.configs.with_overrides)."""
    import json
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--kernel-config must be a JSON object, e.g. '{{\"BG\": 8}}': {err.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--kernel-config must be a JSON object, e.g. '{{\"BG\": 8}}', got {text!r}")
    return value


def _predict_lines(args, workloads) -> int:
    """--predict --lines N: where each kernel's predicted time goes, by source line (predict.line_costs)."""
    import json
    import os

    from . import predict as pr
    for wl in workloads:
        for prec in args.precision or pr.workload_precisions(wl):
            for K in args.models or [None]:
                rows = pr.line_costs(wl, prec, args.gpu, K, top=args.lines, kernel_config=args.kernel_config)
                if args.json:
                    for row in rows:
                        print(json.dumps({"workload": wl.name, "precision": prec, **row}, sort_keys=True))
                    continue
                print(f"\n{wl.name} {prec}: SM-cycles per model-step by source line ({args.gpu} model, predicted)")
                print(f"{'kernel':24s} {'file:line':24s} {'binds':9s} {'cycles':>9s} {'instr':>9s} "
                      f"{'shared wf':>9s} {'fp32':>9s}  source")
                for r in rows:
                    where = f"{os.path.basename(r['file'] or '?')}:{r['line']}"
                    print(f"{r['kernel'][:24]:24s} {where[:24]:24s} {r['resource']:9s} {r['cycles']:9.0f} "
                          f"{r['instructions']:9.0f} {r['shared_wavefronts']:9.0f} {r['fp32']:9.0f}  {r['source'][:70]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
