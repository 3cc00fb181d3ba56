"""Timing harness: every backend of a workload in one process, the same population and config for all.

What one measurement is: a whole training call of `steps` steps from the initial weights (the peers'
``train()``; ``sp.train(pop, cfg, backend="triton", input_precision=...)`` for the fused kernels, which
includes copying the population to the device and the results back), after `warmup` untimed calls of
the same kind (compilation, autotuning, CUDA-graph capture happen there), repeated `repeats` times.

Timers: on CUDA, CUDA events around the call (device-side time from the first to the last enqueued
work, so Python launch overhead counts where the GPU waits for it); JAX on its own streams, and
everything on the CPU, with ``time.perf_counter`` after synchronising (``block_until_ready`` for JAX).

Metrics of one measurement (median over repeats, and min / max):
    ms_per_1000_steps = 1000 * 1000 * t / steps              (t: seconds per call)
    model_steps_per_s = K * steps / t
    samples_per_s     = K * B * steps / t
    flop_per_s        = 10 m n * samples_per_s               (see workloads.flops_per_sample)
    fp32_peak_fraction = flop_per_s / FP32 peak               (datasheet peak of the device when it is in
                        PEAK_TABLE, else the measured one; both fractions are stored)
    ratio_to_fastest_peer = model_steps_per_s / that of the fastest peer (torch, torch-compile, jax)
                        at the same workload, K and precision, in the same run
"""
from __future__ import annotations

import gc
import importlib.util
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import torch

from .peers import PEERS, JaxPeer, jax_available, make_peer, torch_matmul_precision
from .report import add_peer_ratios  # noqa: F401  (re-exported: ratios are computed where rows are read)
from .workloads import WORKLOADS, Workload, flops_per_sample

BACKENDS = ("torch", "torch-compile", "jax", "triton", "triton-fused", "triton-split", "triton-tf32x3", "reference")
# The fused kernels with the tiled kernels' launch mode chosen by kernels.configs.use_split ("triton")
# or forced, to check that choice on a GPU (same results either way; small-kernel shapes ignore it).
TRITON_SPLIT = {"triton": None, "triton-fused": False, "triton-split": True, "triton-tf32x3": None}
# the near-fp32 tensor-core path (three TF32 products): measured in the `ieee` rows only, beside the
# peers with TF32 off, the accuracy class it aims at (the GPU test finds it a few times less accurate than
# FMA where sums cancel: bench/README.md); the tiled workloads' only use for it
TRITON_INPUT_PRECISION = {"triton-tf32x3": "tf32x3"}

# Datasheet FP32 (non-tensor-core) peak, FLOP/s, by device name; the first matching pattern wins.
PEAK_TABLE = (
    (r"H200.*NVL", "H200 NVL", 60e12),
    (r"H200", "H200 SXM", 67e12),
    (r"H100.*PCIe", "H100 PCIe", 51e12),
    (r"H100.*NVL", "H100 NVL", 60e12),
    (r"H100", "H100 SXM", 67e12),
    (r"GH200", "GH200", 67e12),
    (r"A100", "A100", 19.5e12),
    (r"L40S", "L40S", 91.6e12),
    (r"\bL4\b", "L4", 30.3e12),
    (r"A10G", "A10G", 31.2e12),
    (r"\bA10\b", "A10", 31.2e12),
    (r"RTX 4090", "RTX 4090", 82.6e12),
    (r"V100", "V100", 15.7e12),
    (r"\bT4\b", "T4", 8.1e12),
)


def table_peak(device_name: str):
    """(label, FP32 FLOP/s) of a known device, or (None, None)."""
    for pattern, label, flops in PEAK_TABLE:
        if re.search(pattern, device_name):
            return label, flops
    return None, None


def measure_fp32_peak(device, size: int | None = None, iters: int = 10) -> tuple[float, str]:
    """Best FLOP/s of a large square fp32 matmul with TF32 disabled: what the device reaches in practice."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    with torch_matmul_precision("ieee"):
        for i in range(iters + 2):
            seconds = time_call(lambda: torch.mm(a, b), device)
            if i >= 2:
                best = min(best, seconds)
    return 2.0 * size**3 / best, f"measured: best of {iters} fp32 {size}^3 torch.mm, TF32 off"


def time_call(fn, device, block=None) -> float:
    """Seconds of fn(): CUDA events on CUDA (unless `block` is given: then wall time), else perf_counter."""
    device = torch.device(device)
    if device.type == "cuda" and block is None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if block is not None:
        block(out)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def metrics(times_s, K: int, batch_size: int, steps: int, n: int, m: int, peak_flops=None,
            measured_peak_flops=None) -> dict:
    """Throughput metrics of one measurement from its per-call times (seconds)."""
    t = statistics.median(times_s)
    per_1000 = 1e6 / steps  # ms per 1000 steps per second of call time
    samples_per_s = K * batch_size * steps / t
    flop_per_s = flops_per_sample(n, m) * samples_per_s
    return {
        "ms_per_1000_steps": t * per_1000,
        "ms_per_1000_steps_min": min(times_s) * per_1000,
        "ms_per_1000_steps_max": max(times_s) * per_1000,
        "spread_pct": 100.0 * (max(times_s) - min(times_s)) / t,
        "model_steps_per_s": K * steps / t,
        "samples_per_s": samples_per_s,
        "flops_per_sample": flops_per_sample(n, m),
        "flop_per_s": flop_per_s,
        "fp32_peak_fraction": flop_per_s / peak_flops if peak_flops else None,
        "fp32_measured_peak_fraction": flop_per_s / measured_peak_flops if measured_peak_flops else None,
    }


# --- environment --------------------------------------------------------------------------------
from ..store import _cpu_name  # noqa: E402  (one place reads the CPU's name)


def device_info(device) -> dict:
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        label, peak = table_peak(props.name)
        return {"device": props.name, "device_type": "cuda", "capability": f"{props.major}.{props.minor}",
                "sm_count": props.multi_processor_count, "total_memory_bytes": props.total_memory,
                "peak_table_entry": label, "fp32_peak_flops_table": peak}
    return {"device": f"CPU: {_cpu_name()} (torch threads: {torch.get_num_threads()})", "device_type": "cpu",
            "peak_table_entry": None, "fp32_peak_flops_table": None}


def _version(dist: str):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - not installed
        return None


def versions() -> dict:
    from .. import __version__
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": _version("triton"), "jax": _version("jax"), "jaxlib": _version("jaxlib"),
            "numpy": _version("numpy"), "superpos": __version__}


def git_commit() -> tuple:
    """(HEAD commit, whether the work tree has changes), or (None, None) outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip() != ""
        return head or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


# --- runners ------------------------------------------------------------------------------------
class Runner:
    """One backend ready to train one population: .call() is a whole training call."""

    def __init__(self, backend: str, pop, cfg, device, precision: str):
        self.backend, self.device, self.precision = backend, torch.device(device), precision
        self.block = None
        self.peer = None
        self._options = {}
        if backend in PEERS:
            self.peer = make_peer(backend, pop, cfg, device, precision)
            self.call = self.peer.train
            if isinstance(self.peer, JaxPeer):
                self.block = self.peer.block
        elif backend in TRITON_SPLIT:
            import superpos as sp
            split = TRITON_SPLIT[backend]
            input_precision = TRITON_INPUT_PRECISION.get(backend, precision)
            self.call = lambda: sp.train(pop, cfg, backend="triton", device=device,
                                         input_precision=input_precision, split=split)
            self._options = {"input_precision": input_precision, "split": split,
                             "api": "sp.train(backend='triton')"}
        elif backend == "reference":
            import superpos as sp
            self.call = lambda: sp.train(pop, cfg, backend="torch", device=device)
            self._options = {"api": "sp.train(backend='torch')", "data": "Philox (torch ops)"}
        else:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.timer = ("perf_counter + block_until_ready" if self.block else
                      "cuda events" if self.device.type == "cuda" else "perf_counter")

    @property
    def options(self) -> dict:
        return dict(self.peer.options) if self.peer is not None else dict(self._options)

    def time(self) -> float:
        return time_call(self.call, self.device, self.block)

    def close(self):
        if self.peer is not None and hasattr(self.peer, "close"):
            self.peer.close()

    def compiled_peak_bytes(self):
        return self.peer.compiled_peak_bytes() if isinstance(self.peer, JaxPeer) else None


def _is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "resource_exhausted" in text


def _free(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def measure(workload: Workload, backend: str, K: int, precision: str, *, device, steps=None, quick=False,
            repeats=3, warmup=1, time_budget_s=120.0, pop=None) -> dict:
    """One (workload, backend, K, precision) measurement: a row without run-level fields."""
    cfg = workload.train_config(steps, quick)
    pop = pop if pop is not None else workload.population(K)
    device = torch.device(device)
    row = {"workload": workload.name, "backend": backend, "precision": precision,
           "label": backend if precision == "ieee" else f"{backend}:{precision}",
           "K": K, "n": workload.n, "m": workload.m, "batch_size": cfg.batch_size, "steps": cfg.steps,
           "status": "ok", "error": None, "times_s": [], "warmup_s": [], "peak_memory_bytes": None,
           "peak_memory_source": None, "backend_options": {}, "timer": None, "train_config": cfg.to_dict()}
    runner = None
    try:
        with torch_matmul_precision(precision):
            runner = Runner(backend, pop, cfg, device, precision)
            row["timer"] = runner.timer
            for _ in range(warmup):
                row["warmup_s"].append(runner.time())
            cuda = device.type == "cuda" and runner.block is None
            for i in range(repeats):
                if cuda and i == 0:
                    torch.cuda.reset_peak_memory_stats(device)
                row["times_s"].append(runner.time())
                if cuda and i == 0:
                    row["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
                    row["peak_memory_source"] = "torch.cuda.max_memory_allocated"
                spent = sum(row["times_s"])
                if i + 1 < repeats and spent + row["times_s"][-1] > time_budget_s:
                    break  # the next repeat would pass the budget: keep what we have
            if row["peak_memory_bytes"] is None and runner.compiled_peak_bytes() is not None:
                row["peak_memory_bytes"] = runner.compiled_peak_bytes()
                row["peak_memory_source"] = "XLA compiled memory_analysis"
            row["backend_options"] = runner.options
    except Exception as err:  # noqa: BLE001 - a failing backend is a result (oom, unsupported), not a crash
        row["status"] = "oom" if _is_oom(err) else "error"
        message = str(err).strip().splitlines()
        row["error"] = f"{type(err).__name__}: {message[0][:300] if message else ''}"
        if runner is not None:
            row["backend_options"] = runner.options
    finally:
        if runner is not None:
            runner.close()  # compiled graphs and CUDA-graph pools would otherwise outlive the runner
        del runner
        _free(device)
    row["repeats"] = len(row["times_s"])
    return row


def default_backends(device, quick: bool) -> list:
    backends = ["torch", "torch-compile"]
    if jax_available():
        backends.append("jax")
    if not quick and torch.device(device).type == "cuda" and importlib.util.find_spec("triton") is not None:
        backends.append("triton")
    if quick:
        backends.append("reference")  # superpos's own CPU path (sp.train, backend "torch") beside the peers
    return backends


def run(workloads, backends=None, *, device=None, quick=False, steps=None, repeats=None, warmup=1,
        precisions=None, models=None, measure_peak=True, time_budget_s=120.0, threads=None, log=None,
        on_row=None) -> list:
    """Measure every (workload, K, precision, backend); returns the rows (see report.FIELDS).

    on_row(row) is called with each row as soon as it is measured (the CLI appends it to the results
    file then, so that a run killed by a time limit keeps every finished measurement).

    threads: torch's CPU intra-op threads for this run (restored after). The --quick smoke test uses 1:
    on a small, shared CI machine, OpenMP barriers of parallel ops stall for milliseconds whenever
    another process holds a core, which swamps tiny ops.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(workloads, backends, device, quick, steps, repeats, warmup, precisions, models,
                    measure_peak, time_budget_s, log, on_row)
    finally:
        torch.set_num_threads(old_threads)


def _run(workloads, backends, device, quick, steps, repeats, warmup, precisions, models, measure_peak,
         time_budget_s, log, on_row) -> list:
    if device is None:
        device = "cpu" if quick or not torch.cuda.is_available() else "cuda"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but no CUDA device is available (use --quick on the CPU)")
    backends = list(backends) if backends else default_backends(device, quick)
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {b!r}")
    workloads = [WORKLOADS[w] if isinstance(w, str) else w for w in workloads]
    repeats = repeats if repeats is not None else (2 if quick else 3)

    info = device_info(device)
    peak_flops, peak_source = info["fp32_peak_flops_table"], None
    if peak_flops:
        peak_source = f"table: {info['peak_table_entry']} datasheet FP32"
    measured, measured_source = None, None
    if measure_peak:
        measured, measured_source = measure_fp32_peak(device)
        log(f"fp32 peak: {measured / 1e12:.2f} TFLOP/s ({measured_source})")
    if not peak_flops and measured:
        peak_flops, peak_source = measured, measured_source
    commit, dirty = git_commit()
    run_id = uuid.uuid4().hex[:12]
    common = {"device": info["device"], "device_type": info["device_type"], "quick": quick, "run_id": run_id,
              "versions": versions(), "commit": commit, "commit_dirty": dirty, "host": platform.node(),
              "fp32_peak_flops": peak_flops, "fp32_peak_source": peak_source,
              "fp32_measured_peak_flops": measured, "fp32_measured_peak_source": measured_source}
    if quick:
        common["note"] = "CPU smoke-test figures (--quick): tiny K and steps, not GPU claims"

    rows = []
    for workload in workloads:
        counts = models or workload.model_counts(quick)
        precs = precisions or (("ieee",) if device.type == "cpu" else workload.precisions)
        for K in counts:
            pop = workload.population(K)
            for precision in precs:
                for backend in backends:
                    if backend in TRITON_INPUT_PRECISION and precision != "ieee":
                        continue  # a float32-accurate variant: nothing to set beside the tf32 peers
                    row = measure(workload, backend, K, precision, device=device, steps=steps, quick=quick,
                                  repeats=repeats, warmup=warmup, time_budget_s=time_budget_s, pop=pop)
                    # a failed measurement keeps every metric field, as None (report.FIELDS are required)
                    row.update(dict.fromkeys(("ms_per_1000_steps", "model_steps_per_s", "samples_per_s",
                                              "flop_per_s", "fp32_peak_fraction")))
                    if row["status"] == "ok":
                        row.update(metrics(row["times_s"], K, row["batch_size"], row["steps"], workload.n,
                                           workload.m, peak_flops, measured))
                    row.update(common)
                    row["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                    row["config"] = {"workload": workload.to_dict(), "train": row.pop("train_config"),
                                     "backend_options": row.pop("backend_options"),
                                     "harness": {"warmup": warmup, "repeats": repeats, "timer": row["timer"],
                                                 "time_budget_s": time_budget_s},
                                     "device_info": info,
                                     "env": {k: os.environ[k] for k in ("XLA_PYTHON_CLIENT_PREALLOCATE",
                                                                        "XLA_PYTHON_CLIENT_ALLOCATOR",
                                                                        "TRITON_INTERPRET") if k in os.environ}}
                    rows.append(row)
                    log(_summary(row))
                    if on_row is not None:
                        on_row(row)
            del pop
    return add_peer_ratios(rows)


def _summary(row: dict) -> str:
    head = f"{row['workload']:9s} K={row['K']:<8d} {row['label']:18s}"
    if row["status"] != "ok":
        return f"{head} {row['status']}: {row['error']}"
    frac = row.get("fp32_peak_fraction")
    return (f"{head} {row['ms_per_1000_steps']:10.2f} ms/1000 steps (±{row['spread_pct']:.0f}%, "
            f"{row['repeats']} repeats)  {row['model_steps_per_s']:.3g} model-steps/s  "
            f"{row['flop_per_s'] / 1e9:.3g} GFLOP/s" + (f"  {100 * frac:.2f}% of FP32 peak" if frac else ""))
