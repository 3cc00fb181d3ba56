"""`superpos` command line: run a sweep, plot a run, benchmark.

    superpos run SPEC.toml --out DIR [--backend auto|torch|triton] [--precision ieee|tf32x3|tf32] [--quick]
                 [--quiet] [--checkpoint-every S]
    superpos plot DIR [--format png|pdf|svg] [--out PLOTDIR] [--models IDS] [--verbose]
    superpos status DIR [--json]  where a run stands (chunks done, running or not, time left)
    superpos bench ...            (arguments go to superpos.bench.cli)

Bad input (an invalid or missing spec, a DIR holding another run, a locked DIR) prints one line
`superpos: error: ...` on stderr and exits with code 2, writing nothing into DIR.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .train import BACKENDS, PRECISIONS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _error(msg: str) -> int:
    one_line = " ".join(str(msg).split())
    print(f"superpos: error: {one_line}", file=sys.stderr)
    return EXIT_USAGE


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _seconds(text):
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v >= 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number of seconds in [0, inf], got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superpos", description="Train thousands of toy models of superposition at once.")
    sub = parser.add_subparsers(dest="command", metavar="{run,plot,status,bench}")
    sub.required = True

    run = sub.add_parser("run", help="train every model of a sweep spec into a run directory (resumes)",
                         description="Train every model of a TOML sweep spec into DIR. Rerunning the same "
                                     "command resumes an interrupted run. Under torchrun, ranks share the chunks.")
    run.add_argument("spec", metavar="SPEC", help="the sweep spec (TOML), e.g. experiments/intro.toml")
    run.add_argument("--out", required=True, metavar="DIR", help="run directory (created; resumed if it holds this spec)")
    run.add_argument("--backend", choices=BACKENDS, default="auto", help="training backend (default: auto)")
    run.add_argument("--precision", choices=PRECISIONS, default="ieee",
                     help="the fused kernels' matmul precision (triton backend): ieee (float32 FMA), tf32x3 "
                          "(tensor cores, float32-accurate), tf32 (tensor cores, approximate); default: ieee")
    run.add_argument("--quick", action="store_true", help="use the spec's [quick] sizes (a smoke-test run)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument("--chunk-size", type=_positive_int, default=None, metavar="K",
                     help="models per chunk (default: what fits the device's memory); only for a new DIR")
    run.add_argument("--device", default=None, help="torch device (default: cuda when used by the backend, else cpu)")
    from .driver import CHECKPOINT_SECONDS

    run.add_argument("--checkpoint-every", type=_seconds, default=CHECKPOINT_SECONDS, metavar="SECONDS",
                     help="save a training chunk's state this often, so a kill loses at most this much work "
                          "(default: %(default).0f; 0: as often as possible; inf: never)")
    run.add_argument("--side-by-side", type=_positive_int, default=None, metavar="N",
                     help="chunks trained at once (default: on a GPU, as many as fill it where each chunk is "
                          "small, e.g. one group per dataset size; else 1)")
    run.add_argument("--no-plot", action="store_true", help="do not draw the figures into DIR/plots at the end")
    run.set_defaults(func=_cmd_run)

    plot = sub.add_parser("plot", help="draw the figures of a run directory")
    plot.add_argument("dir", metavar="DIR", help="a run directory written by `superpos run`")
    plot.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="image format (default: png)")
    plot.add_argument("--out", default=None, metavar="PLOTDIR", help="where to write the figures (default: DIR/plots)")
    plot.add_argument("--models", default=None, metavar="IDS",
                      help="model ids the per-model figures draw, e.g. 0,5,10-19 (default: best of seeds, "
                           "at most 12 grid points)")
    plot.add_argument("--verbose", action="store_true", help="say why each skipped figure was skipped")
    plot.set_defaults(func=_cmd_plot)

    status = sub.add_parser("status", help="where a run stands: chunks done, running or not, time left",
                            description="Read a run directory (no lock taken, nothing written) and say how far "
                                        "it got, whether a process is training it, and the time left.")
    status.add_argument("dir", metavar="DIR", help="a run directory written by `superpos run`")
    status.add_argument("--json", action="store_true", help="one JSON object instead of text")
    status.set_defaults(func=_cmd_status)

    sub.add_parser("bench", help="benchmarks (arguments are passed to superpos.bench.cli)", add_help=False)
    return parser


def _cmd_run(args) -> int:
    from .runspec import _is_rank_zero, run_spec
    from .sweep import load_spec

    sweep = load_spec(args.spec, quick=args.quick)  # every spec error surfaces here, before DIR is touched
    _sigterm_interrupts()
    run_spec(sweep, args.out, backend=args.backend, quiet=args.quiet, chunk_size=args.chunk_size,
             device=args.device, checkpoint_every=args.checkpoint_every, plot=False, argv=["superpos", "run"] + args.argv,
             side_by_side=args.side_by_side, precision=args.precision)
    if args.no_plot or not _is_rank_zero():
        return 0
    return _cmd_plot(argparse.Namespace(dir=args.out, format="png", out=None, quiet=args.quiet, verbose=False,
                                         models=None))


def _sigterm_interrupts():
    """SIGTERM (kill, SLURM preemption, torchrun tearing down) stops a run like Ctrl-C: cleanly, resumable."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _cmd_plot(args) -> int:
    from .runspec import draw_figures, skipped_lines

    try:
        from .run_figures import parse_model_ids

        models = parse_model_ids(args.models) if getattr(args, "models", None) else None
        written, skipped = draw_figures(args.dir, args.format, args.out, models=models)
    except ModuleNotFoundError as e:
        if e.name in ("superpos.plots", "superpos.run_figures", "matplotlib", "networkx"):
            return _error(f"plotting is not available in this installation (no {e.name})")
        raise
    if getattr(args, "quiet", False):
        return 0
    for path in written:
        print(path)
    for line in skipped_lines(skipped, getattr(args, "verbose", False)):
        print(line, file=sys.stderr)
    return 0


def _cmd_status(args) -> int:
    import json

    from .status import format_status, run_status

    st = run_status(args.dir)
    print(json.dumps(st, sort_keys=True) if args.json else format_status(st))
    return 0


def _cmd_bench(argv) -> int:
    try:
        bench = importlib.import_module("superpos.bench.cli")
    except ModuleNotFoundError as e:
        if e.name in ("superpos.bench", "superpos.bench.cli"):
            return _error("benchmarks are not available in this installation (no superpos.bench.cli)")
        raise
    rc = bench.main(argv)
    return int(rc or 0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _cmd_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except FileNotFoundError as e:
        return _error(e.strerror + f": {e.filename}" if e.filename and e.strerror else e)
    except (ValueError, OSError) as e:  # ValueError covers bad specs/values, RunError and invalid TOML
        return _error(e)
    except KeyboardInterrupt:
        print("superpos: interrupted; finished chunks are kept - rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
