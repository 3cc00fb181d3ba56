"""Benchmark results: JSON lines in bench/results/, a markdown table and a log-log throughput plot.

One line per (workload, backend, precision, K) measurement. Required fields (see harness.py for how
they are measured): workload, backend, precision, K, device, model_steps_per_s, samples_per_s,
ms_per_1000_steps, fp32_peak_fraction, peak_memory_bytes, versions, commit, timestamp, config.

    python -m superpos.bench.report bench/results/FILE.jsonl --readme bench/README.md --plot OUT.png
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

FIELDS = ("workload", "backend", "device", "model_steps_per_s", "samples_per_s", "ms_per_1000_steps",
          "fp32_peak_fraction", "peak_memory_bytes", "versions", "commit", "timestamp", "config")
TABLE_BEGIN = "<!-- bench-table:begin -->"
TABLE_END = "<!-- bench-table:end -->"
PEERS = ("torch", "torch-compile", "jax")  # the peer backends (built in peers.py)
BACKEND_ORDER = ("triton", "triton-fused", "triton-split", "torch-compile", "jax", "torch", "reference")


def results_dir() -> Path:
    """bench/results of the source checkout (editable install), else ./bench/results."""
    repo = Path(__file__).resolve().parents[2]
    return repo / "bench" / "results" if (repo / "bench").is_dir() else Path("bench") / "results"


def default_results_file(device: str, quick: bool) -> Path:
    slug = "cpu" if device.startswith("CPU") else re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    return results_dir() / f"{slug}{'-quick' if quick else ''}.jsonl"


def append_rows(path, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            missing = [k for k in FIELDS if k not in row]
            if missing:
                raise ValueError(f"result row lacks fields {missing}")
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def add_peer_ratios(rows: list) -> list:
    """ratio_to_fastest_peer and fastest_peer for each row, within (workload, K, precision, run).

    Computed where rows are read as well as where they are measured: the CLI writes each row as soon as
    it is measured, before the rest of its group exists.
    """
    groups = {}
    for row in rows:
        groups.setdefault((row.get("run_id"), row["workload"], row["K"], row.get("precision", "ieee")),
                          []).append(row)
    for group in groups.values():
        peers = [r for r in group if r["backend"] in PEERS and r["status"] == "ok"]
        best = max(peers, key=lambda r: r["model_steps_per_s"], default=None)
        for r in group:
            ok = best is not None and r["status"] == "ok"
            r["fastest_peer"] = best["backend"] if best else None
            r["ratio_to_fastest_peer"] = r["model_steps_per_s"] / best["model_steps_per_s"] if ok else None
    return rows


def load_rows(*paths) -> list:
    rows = []
    for path in paths:
        with Path(path).open() as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return add_peer_ratios(rows)


def latest(rows) -> list:
    """The newest row of each (device, workload, K, backend, precision): results files only grow."""
    best = {}
    for row in rows:
        key = (row["device"], bool(row.get("quick")), row["workload"], row["K"], row["backend"],
               row.get("precision", "ieee"))
        if key not in best or row["timestamp"] >= best[key]["timestamp"]:
            best[key] = row
    return list(best.values())


def _sort_key(row):
    from .workloads import WORKLOADS
    order = list(WORKLOADS)
    backend = BACKEND_ORDER.index(row["backend"]) if row["backend"] in BACKEND_ORDER else len(BACKEND_ORDER)
    return (row["device"], order.index(row["workload"]) if row["workload"] in order else len(order),
            row["K"], row.get("precision", "ieee"), backend)


def _num(x, digits=3) -> str:
    """3 significant digits: 0.0123, 4.56, 789, 5,748 below 10^4; 1.23e6 above."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if abs(x) >= 1e4 or (0 < abs(x) < 1e-2):
        mant, exp = f"{x:.{digits - 1}e}".split("e")
        return f"{mant}e{int(exp)}"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _bytes(x) -> str:
    if x is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024


def _peak(row) -> str:
    flops = row.get("fp32_peak_flops")
    return f"{flops / 1e12:.3g} TFLOP/s ({row.get('fp32_peak_source')})" if flops else "unknown"


def _dates(rows) -> str:
    """The days a table's rows were measured on: one day, or the first and the last."""
    days = sorted({r["timestamp"][:10] for r in rows})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]} (each row's commit and day: the results file)"


def markdown_table(rows) -> str:
    """One table per device: the newest measurement of each (workload, K, backend, precision)."""
    rows = sorted(latest(rows), key=_sort_key)
    out = []
    for device in dict.fromkeys(r["device"] for r in rows):
        dev_rows = [r for r in rows if r["device"] == device]
        first = dev_rows[0]
        v = first.get("versions", {})
        commits = sorted({(r.get("commit") or "?")[:10] for r in dev_rows})
        out.append(f"**{device}**" + (" — CPU smoke test (`--quick`): tiny K and steps, not GPU figures"
                                       if any(r.get("quick") for r in dev_rows) else ""))
        out.append("")
        out.append(f"FP32 peak used: {_peak(first)}; torch {v.get('torch')}, triton {v.get('triton')}, "
                   f"jax {v.get('jax')}, python {v.get('python')}; commit {', '.join(commits)}; "
                   f"{_dates(dev_rows)}.")
        out.append("")
        out.append("| workload | K | n×m | backend | steps | ms / 1000 steps (min–max) | model-steps/s | "
                   "samples/s | GFLOP/s | % FP32 peak | peak memory | × fastest peer |")
        out.append("|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in dev_rows:
            label = r["backend"] + (f" ({r['precision']})" if r.get("precision", "ieee") != "ieee" else "")
            head = f"| {r['workload']} | {r['K']:,} | {r['n']}×{r['m']} | {label} | {r['steps']:,} |"
            if r.get("status", "ok") != "ok":
                out.append(f"{head} {r['status']} | | | | | | |")
                continue
            frac = r.get("fp32_peak_fraction")
            ratio = r.get("ratio_to_fastest_peer")
            out.append(
                f"{head} {_num(r['ms_per_1000_steps'])} ({_num(r.get('ms_per_1000_steps_min'))}–"
                f"{_num(r.get('ms_per_1000_steps_max'))}) | {_num(r['model_steps_per_s'])} | "
                f"{_num(r['samples_per_s'])} | {_num(r.get('flop_per_s', 0) / 1e9)} | "
                f"{'–' if frac is None else f'{100 * frac:.2f}%'} | {_bytes(r.get('peak_memory_bytes'))} | "
                f"{'–' if ratio is None else f'{ratio:.2f}×'} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_readme(readme, table: str, begin: str = TABLE_BEGIN, end: str = TABLE_END) -> Path:
    """Replace the text between the `begin` and `end` markers (the bench-table ones by default) of
    `readme` with `table`."""
    readme = Path(readme)
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{table}{end}{tail}")
    return readme


def plot_throughput(rows, path, workload: str = "scaling") -> Path:
    """Log-log model-steps/s against K, one line per backend (and device when several)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in latest(rows) if r["workload"] == workload and r.get("status", "ok") == "ok"]
    if not rows:
        raise ValueError(f"no successful rows of workload {workload!r} to plot")
    devices = list(dict.fromkeys(r["device"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    series = {}
    for r in rows:
        label = r["backend"] + (f" ({r['precision']})" if r.get("precision", "ieee") != "ieee" else "")
        if len(devices) > 1:
            label += f" — {r['device']}"
        series.setdefault(label, []).append((r["K"], r["model_steps_per_s"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("models trained at once (K)")
    ax.set_ylabel("model-steps / s (batch %d)" % rows[0]["batch_size"])
    quick = any(r.get("quick") for r in rows)
    n, m = rows[0]["n"], rows[0]["m"]
    title = f"{workload}: n={n}, m={m}" + (f" — {devices[0]}" if len(devices) == 1 else "")
    if quick:
        title += "\nCPU smoke test (--quick), not GPU figures"
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m superpos.bench.report",
                                     description="Markdown table and throughput plot from benchmark results")
    parser.add_argument("results", nargs="+", help="JSON-lines results file(s)")
    parser.add_argument("--readme", help="replace the table between the bench-table markers of this file")
    parser.add_argument("--plot", help="write the log-log throughput-vs-K plot here (PNG)")
    parser.add_argument("--plot-workload", default="scaling")
    args = parser.parse_args(argv)
    return report(args.results, readme=args.readme, plot=args.plot, plot_workload=args.plot_workload)


def report(results, readme=None, plot=None, plot_workload="scaling", echo=print) -> int:
    rows = load_rows(*results)
    table = markdown_table(rows)
    if readme:
        update_readme(readme, table)
        echo(f"table written to {readme}")
    else:
        echo(table)
    if plot:
        echo(f"plot written to {plot_throughput(rows, plot, plot_workload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
