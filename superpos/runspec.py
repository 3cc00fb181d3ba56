"""`sp.run_spec`: a whole sweep spec into a run directory from Python, as `superpos run` does it."""
from __future__ import annotations

import sys
from pathlib import Path

from .driver import CHECKPOINT_SECONDS, run_sweep
from .store import load_run
from .sweep import Sweep, parse_spec


def run_spec(spec, out, quick: bool = False, backend: str = "auto", quiet: bool = False,
             chunk_size: int | None = None, device=None, checkpoint_every: float = CHECKPOINT_SECONDS,
             plot: bool = True, plot_format: str = "png", argv=None, side_by_side: int | None = None,
             precision: str = "ieee"):
    """Train every model of `spec` into run directory `out`, draw its figures into `out/plots`, and
    return the run (`superpos.store.Run`: `.table`, `.weights(ids)`, `.loss_history(ids)`).

    spec: a path to a TOML file, TOML text, a dict (as TOML would parse) or a Sweep. Like `superpos run`:
    rerunning resumes (finished chunks are kept, an unfinished one continues from its last checkpoint,
    taken every `checkpoint_every` seconds), a DIR of another spec or backend is refused, bad input raises
    a ValueError naming the field before anything is written. side_by_side: chunks trained at once
    (default: as many as fill the GPU where chunks are small, else one; superpos.side_by_side).
    precision: the fused kernels' matmul precision, "ieee", "tf32x3" or "tf32" (triton backend only; a run
    keeps the one it was started with).
    """
    sweep = spec if isinstance(spec, Sweep) else parse_spec(spec, quick=quick)
    run_sweep(sweep, out, backend=backend, quiet=quiet, chunk_size=chunk_size, device=device, argv=argv,
              checkpoint_every=checkpoint_every, side_by_side_count=side_by_side, precision=precision)
    if plot and _is_rank_zero():
        _, skipped = draw_figures(out, plot_format)
        if not quiet:
            for line in skipped_lines(skipped):
                print(line, file=sys.stderr)
    return load_run(out)


def draw_figures(directory, fmt: str = "png", outdir=None, models=None):
    """Every figure run `directory` allows, into `outdir` (default DIR/plots): (written paths, skipped).
    `models`: the model ids the per-model figures draw (default: best of seeds, a readable subset)."""
    import importlib

    run = load_run(directory)
    figures = importlib.import_module("superpos.run_figures")
    outdir = Path(outdir) if outdir else Path(directory) / "plots"
    written, skipped = figures.plot_run(run, outdir, fmt, models=models)
    return written, [tuple(s) if isinstance(s, (tuple, list)) and len(s) == 2 else (s, "") for s in skipped or ()]


def skipped_lines(skipped, verbose: bool = False) -> list:
    """What to say about skipped figures: one line for those the run's axes do not allow (each with its
    reason when `verbose`), and one line per figure that failed to draw (an error is always shown)."""
    failed = [(name, why) for name, why in skipped if why.startswith("could not draw")]
    plain = [(name, why) for name, why in skipped if (name, why) not in failed]
    lines = [f"superpos: skipped {name}: {why}" for name, why in failed + (plain if verbose else [])]
    if plain and not verbose:
        s = "s" if len(plain) != 1 else ""
        lines.insert(0, f"superpos: skipped {len(plain)} figure{s} this run's axes do not allow "
                        f"({', '.join(name for name, _ in plain)}; `superpos plot DIR --verbose` says why)")
    return lines


def _is_rank_zero() -> bool:
    """Under torchrun only rank 0 draws (every rank has finished: the driver ends with a barrier)."""
    import os
    return os.environ.get("RANK", "0") == "0"
