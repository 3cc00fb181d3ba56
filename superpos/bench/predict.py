"""`superpos bench --predict`: the cost model (superpos.bench.costmodel) applied to every bench workload.

One row per (workload, precision): the launches a whole training run makes (workload's K, steps and
batch; the launch mode `use_split` picks for the device's SM count), warp instructions per model-step
per pipe, predicted ms per 1,000 steps, the resource that binds, and the floor:
    philox   ceil(B/4) n Philox4x32-10 calls per model-step (each gives the 4 words of 4 samples'
             feature), at the IMAD-pipe instructions Triton emits for one call (philox_imad_per_call)
    fp32     5 m n B FMAs per model-step (10 m n FLOPs per sample) at the FP32 FMA peak (ieee)
    tensor   the same FMAs at the TF32 wgmma peak (tf32); tf32x3: three times that (tf32x3)
The floor is the larger of philox and the matmul bound of the precision; `floors` also holds
`tf32x3` (three TF32 products: the bound of the fp32-accurate tensor-core precision `tf32x3`).
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

from . import costmodel as cm

# The launcher's calls, recorded without running and compiled as a GPU of that arch would build them.
from ..kernels.as_launched import compile_launch
from ..launch_capture import capture_launches

PREDICTED_FILE = "predicted.jsonl"
MATMUL_FLOOR = {"ieee": "fp32", "tf32x3": "tf32x3", "tf32": "tensor"}  # the matmul bound of each precision
PREDICTED_BEGIN, PREDICTED_END = "<!-- predicted-table:begin -->", "<!-- predicted-table:end -->"
PIPE_FIELDS = ("fp32", "imad", "alu", "uniform", "xu", "shfl", "mma", "shared", "local", "global", "const",
               "barrier", "branch", "other")


@functools.lru_cache(maxsize=None)
def philox_imad_per_call(arch: int = cm.ARCH) -> float:
    """IMAD-pipe warp instructions per tl.philox call, counted in the SASS of a probe kernel that draws
    the kernels' stream (counter (c0, step, 0, 0), c0 varying per lane, key and step uniform)."""
    from .probes import philox_probe_launch
    with _own_cache():
        prof = cm.profile_kernel(compile_launch(philox_probe_launch(), arch))
    (_, counts, _), = [r for r in prof.regions if r[0]]  # the one loop: one call per lane per trip
    return float(counts["imad"])


def floors(n: int, m: int, B: int, K: int, device: cm.Device, philox_imad: float | None = None) -> dict:
    """Seconds per step for K models on the whole device, per bound (see the module docstring);
    `philox_imad`: IMAD-pipe instructions per Philox call (default: counted, philox_imad_per_call)."""
    hz = device.clock_ghz * 1e9 * device.sms
    calls = math.ceil(B / 4) * n * K
    fmas = 5 * m * n * B * K
    philox_imad = philox_imad_per_call() if philox_imad is None else philox_imad
    return {"philox": calls / 32 * philox_imad / (device.rates["imad"] * hz),
            "fp32": fmas / (32 * device.rates["fp32+imad"] * hz),
            "tensor": fmas / (device.tensor_fmas_per_clk * hz),
            "tf32x3": 3 * fmas / (device.tensor_fmas_per_clk * hz)}


def _one_line(err: Exception) -> str:
    """The root cause of a compile error in one line (Triton's CompilationError wraps it in source
    context)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and ln.strip() != "^"]
    return f"{type(err).__name__}: {(lines[-1] if lines else '')[:200]}"


@contextlib.contextmanager
def _own_cache():
    """Compile into a Triton cache of this source tree's own: Triton's cache key holds a kernel's source
    and first line but not its file, so a binary cached by another checkout of the same kernels would
    carry line info naming that checkout's files (which may have changed since)."""
    import triton
    tree = Path(__file__).resolve().parents[2]
    with triton.knobs.cache.scope():
        triton.knobs.cache.dir = str(Path(triton.knobs.cache.dir).parent
                                     / f"cache-superpos-{hashlib.sha1(str(tree).encode()).hexdigest()[:12]}")
        yield


def _profiles(launches: list, arch: int) -> tuple:
    """Profile of each launch (compiled once per specialization). A specialization that does not
    compile is costed with the most used compiled one of the same kernel, and reported."""
    keys = [lc.specialization_key(arch) for lc in launches]
    compiled, errors = {}, {}
    for key, lc in zip(keys, launches):
        if key not in compiled and key not in errors:
            try:
                with _own_cache():
                    compiled[key] = cm.profile_kernel(compile_launch(lc, arch))
            except Exception as err:  # noqa: BLE001 - reported in the row, costed by a stand-in
                errors[key] = _one_line(err)
    uses = Counter(keys)
    profiles, stand_ins = [], Counter()
    for key in keys:
        if key in compiled:
            profiles.append(compiled[key])
            continue
        same = [k for k in compiled if k[0] == key[0]]
        if not same:
            raise RuntimeError(f"{key[0]} does not compile for sm_{arch}: {errors[key]}")
        profiles.append(compiled[max(same, key=uses.__getitem__)])
        stand_ins[key[0]] += 1
    uncompiled = [{"kernel": k[0], "launches": stand_ins[k[0]], "error": e} for k, e in errors.items()]
    return profiles, list(compiled.values()), uncompiled


def _workload_launches(workload, precision: str, device: str, K: int | None, arch: int,
                       kernel_config: dict | None = None) -> tuple:
    """(device, K, train config, launch mode, the launches a whole training run makes) of a workload;
    kernel_config: hand-set blocks instead of the chosen ones (kernels.configs.TUNABLE)."""
    from ..kernels.configs import choose_config, target_capability, use_split, with_overrides
    from ..triton_backend import family_config
    if device not in cm.DEVICES:
        raise ValueError(f"device must be one of {', '.join(cm.DEVICES)}, got {device!r}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise ValueError("--predict compiles for a GPU target: unset TRITON_INTERPRET")
    dev = cm.DEVICES[device]
    K = K or workload.models[-1]
    cfg = workload.train_config()
    pop = workload.population(K)
    capability = (arch // 10, arch % 10)
    kcfg = with_overrides(choose_config(workload.n, workload.m, cfg.batch_size, precision,
                                        **family_config(pop.spec, pop.data), capability=capability), kernel_config)
    options = {"input_precision": precision, "kernel_config": kernel_config or None}
    mode = "small"
    if kcfg.kind == "tiled":
        options["split"] = use_split(kcfg, K, dev.sms)
        mode = "split" if options["split"] else "fused"
    with target_capability(capability):  # the blocks a GPU of this target gets
        launches = capture_launches(pop, cfg, **options)
    return dev, K, cfg, mode, launches


def line_costs(workload, precision: str = "ieee", device: str = "h100-sxm", K: int | None = None,
               arch: int = cm.ARCH, top: int = 10, kernel_config: dict | None = None) -> list:
    """Where a workload's kernel time goes, by source line: the `top` lines of each kernel by the cycles
    they need on their busiest resource (issue, FP32 / IMAD pipe, ALU, XU, the L1/shared pipe), per
    model-step, each row {kernel, file, line, source, resource, cycles, instructions, shared_wavefronts,
    fp32}. Cycles are one SM's at the model's rates, summed over the run's launches; what binds the whole
    launch (latency, occupancy) is predict()'s."""
    dev, K, cfg, _, launches = _workload_launches(workload, precision, device, K, arch, kernel_config)
    profiles, _, _ = _profiles(launches, arch)
    per_line: dict = {}
    for lc, prof in zip(launches, profiles):
        programs = math.prod(lc.grid)
        for key, counts in cm.per_program_lines(prof, lc.bound()).items():
            acc = per_line.setdefault((prof.name,) + key, Counter())
            for name, value in counts.items():
                acc[name] += value * programs
    model_steps = K * cfg.steps
    rows = []
    for (kernel, file, line), counts in per_line.items():
        cycles = cm.resource_cycles(counts, dev)
        resource = max(cycles, key=cycles.get)
        rows.append({"kernel": kernel, "file": file, "line": line, "source": _source_line(file, line),
                     "resource": resource, "cycles": cycles[resource] / model_steps,
                     "instructions": counts["instructions"] / model_steps,
                     "shared_wavefronts": counts["shared_wavefronts"] / model_steps,
                     "fp32": counts["fp32"] / model_steps})
    rows.sort(key=lambda r: -r["cycles"])
    kept = Counter()
    out = []
    for r in rows:
        if kept[r["kernel"]] < top:
            kept[r["kernel"]] += 1
            out.append(r)
    return out


def _source_line(file: str | None, line: int | None) -> str:
    try:
        return _source_lines(file)[line - 1].strip() if file and line else ""
    except (OSError, IndexError):
        return ""


@functools.lru_cache(maxsize=None)
def _source_lines(file: str) -> list:
    return Path(file).read_text().splitlines()  # read once per file, not once per reported line


# The tiled kernel's scratch (kernels/train_tiled.py: each program's x tile [4 BG, n], and gz's beside it
# with GZ_KEPT, written in pass 1 and read back twice) is priced by the model as L2 traffic. Whether those
# reads hit L2 depends on what the resident programs hold at once (SMs x programs per SM x one slot), which
# the model does not price; it is reported beside the prediction. Measured on an H200 (bench/README.md,
# "Where the scratch lives": DRAM bytes per step against the scratch's): a live set of 13.5 MB hit
# (geometry tf32x3: only the write-back of finished tiles reached DRAM), 40.6 MB missed (uniform ieee and
# tf32: every read went to DRAM).
SCRATCH_LIVE_HIT_MB, SCRATCH_LIVE_MISS_MB = 13.5, 40.6


def scratch_mb(args: dict, programs: int, resident: int, dev: cm.Device) -> tuple | None:
    """(scratch in all, scratch the resident programs hold at once) in MB for a tiled launch (one slot per
    program), None for a launch without one."""
    xs = args.get("xs_ptr")
    if not hasattr(xs, "numel") or programs < 1:
        return None
    total = xs.numel() * xs.element_size()
    return total / 1e6, min(programs, dev.sms * resident) * total / programs / 1e6


def predict(workload, precision: str = "ieee", device: str = "h100-sxm", K: int | None = None,
            arch: int = cm.ARCH, kernel_config: dict | None = None) -> dict:
    """The prediction row of one (workload, precision) on `device` (a key of costmodel.DEVICES), with the
    chosen blocks or a kernel_config's (as bench/tune_gpu.py times them on a GPU)."""
    dev, K, cfg, mode, launches = _workload_launches(workload, precision, device, K, arch, kernel_config)
    profiles, distinct, uncompiled = _profiles(launches, arch)

    counts, seconds_by, resource_s = Counter(), Counter(), Counter()
    seconds = 0.0
    calibrated = 0.0  # each launch's time times the measured/predicted factor of the resource binding it
    factors = cm.MEASURED_OVER_PREDICTED.get(device, {})
    kernels: dict = {}
    scratch = None  # (total, live) MB of the launch with the largest live scratch
    for lc, prof in zip(launches, profiles):
        args = lc.bound()
        cost = cm.launch_cost(prof, args, lc.grid, dev)
        sc = scratch_mb(args, cost.programs, cost.resident, dev)
        if sc and (scratch is None or sc[1] > scratch[1]):
            scratch = sc
        counts.update(cost.counts)
        seconds += cost.seconds
        factor = factors.get(cm.calibration_class(cost.binding, prof.name))
        calibrated = calibrated + cost.seconds * factor if calibrated is not None and factor else None
        seconds_by[cost.binding] += cost.seconds
        resource_s.update({k: v / (dev.clock_ghz * 1e9) for k, v in cost.cycles.items()})
        kernels.setdefault(prof.name, {"name": prof.name, "num_warps": prof.num_warps, "registers": prof.registers,
                                       "stack_bytes": prof.stack_bytes, "shared_bytes": prof.shared_bytes,
                                       "programs_per_sm": cost.resident, "launches": 0})["launches"] += 1
    model_steps = K * cfg.steps
    per_step = {k: v / model_steps for k, v in counts.items()}
    fl = {k: v * 1e6 for k, v in floors(workload.n, workload.m, cfg.batch_size, K, dev).items()}  # s/step -> ms/1000
    floor_name = max(("philox", MATMUL_FLOOR[precision]), key=fl.get)
    ms = seconds * 1e3 * 1000 / cfg.steps
    from .harness import git_commit, versions
    commit, dirty = git_commit()
    return {
        "workload": workload.name, "precision": precision, "K": K, "n": workload.n, "m": workload.m,
        "batch_size": cfg.batch_size, "steps": cfg.steps, "mode": mode, "launches": len(launches),
        "kernel_config": kernel_config or None,  # None: the chosen blocks
        "warp_instructions_per_model_step": round(per_step.get("instructions", 0.0), 1),
        "pipes_per_model_step": {p: round(per_step.get(p, 0.0), 1) for p in PIPE_FIELDS},
        "shared_wavefronts_per_model_step": round(per_step.get("shared_wavefronts", 0.0), 1),
        "local_wavefronts_per_model_step": round(per_step.get("local_wavefronts", 0.0), 1),
        "global_bytes_per_model_step": round(per_step.get("global_bytes", 0.0), 1),
        "mma_fmas_per_model_step": round(per_step.get("mma_fmas", 0.0), 1),
        "predicted_ms_per_1000_steps": round(ms, 2),
        # the same scaled by what the resource that binds each launch measured (costmodel.MEASURED_OVER_PREDICTED;
        # None where one of them was never measured)
        "calibrated_ms_per_1000_steps": round(calibrated * 1e6 / cfg.steps, 2) if calibrated else None,
        "binding": max(seconds_by, key=seconds_by.get),
        "binding_share": {k: round(v / seconds, 3) for k, v in seconds_by.most_common()},
        # each resource's time summed over the launches, as if it alone bound: the runners-up
        "resource_ms_per_1000_steps": {k: round(v * 1e6 / cfg.steps, 2) for k, v in resource_s.most_common()},
        "floor_ms_per_1000_steps": round(fl[floor_name], 2), "floor": floor_name,
        "floors_ms_per_1000_steps": {k: round(v, 2) for k, v in fl.items()},
        "registers": max(p.registers for p in distinct), "spill_bytes": max(p.stack_bytes for p in distinct),
        # the x (and gz) scratch of the tiled kernel, MB: in all, and what the resident programs hold at once
        # (SCRATCH_LIVE_HIT_MB: where its reads were measured to hit L2 or not); None without one
        "scratch_mb": round(scratch[0], 1) if scratch else None,
        "scratch_live_mb": round(scratch[1], 1) if scratch else None,
        "kernels": list(kernels.values()), "uncompiled": uncompiled,
        "device": dev.name, "clock_ghz": dev.clock_ghz, "arch": f"sm_{arch}",
        "versions": {"triton": versions().get("triton")}, "commit": commit, "commit_dirty": dirty,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def workload_precisions(workload) -> tuple:
    """Every kernel precision for the workloads with matmuls worth a tensor core (those the bench measures
    at several precisions), tf32x3 included; ieee for the tiny models (no tl.dot: precision does not apply)."""
    from ..kernels.configs import PRECISIONS
    return PRECISIONS if len(workload.precisions) > 1 else ("ieee",)


def predict_all(workloads, precisions=None, device: str = "h100-sxm", models=None,
                kernel_config: dict | None = None) -> list:
    """Rows for every workload, each of its precisions (those of `precisions`, if given) and each K of
    `models` (default: the workload's largest K)."""
    return [predict(w, prec, device, K, kernel_config=kernel_config) for w in workloads
            for prec in workload_precisions(w) if precisions is None or prec in precisions for K in (models or [None])]


def default_file() -> Path:
    from .report import results_dir
    return results_dir() / PREDICTED_FILE


SAME_SM = ("H100", "H200")  # one GH100 SM at the same clocks: the kernels measured the same on both (2026-11-27)


def measured_ms(rows) -> dict:
    """{(workload, precision, K): (ms per 1,000 steps, GPU)} of the newest `triton` rows measured on the
    modelled GPU or one with the same SM (SAME_SM: an H100 SXM model takes H200 rows), from
    bench/results/*.jsonl."""
    from .report import latest, load_rows, results_dir
    files = [f for f in sorted(results_dir().glob("*.jsonl")) if f.name != PREDICTED_FILE]
    gpus = {r["device"].split(" (")[0].replace("NVIDIA ", "").split()[0] for r in rows}  # e.g. "H100"
    if gpus & set(SAME_SM):
        gpus |= set(SAME_SM)
    found, when = {}, {}
    for r in latest(load_rows(*files)) if files else []:
        prec = {"triton": r.get("precision", "ieee"), "triton-tf32x3": "tf32x3"}.get(r.get("backend"))
        gpu = next((g for g in sorted(gpus) if g in r["device"]), None)
        key = (r["workload"], prec, r["K"])
        if prec and gpu and r.get("status", "ok") == "ok" and r["timestamp"] >= when.get(key, ""):
            found[key], when[key] = (r["ms_per_1000_steps"], gpu), r["timestamp"]
    return found


def update_readme(readme, rows) -> Path:
    from .report import update_readme as replace_between
    return replace_between(readme, markdown_table(rows, measured_ms(rows)), PREDICTED_BEGIN, PREDICTED_END)


def append_rows(path, rows) -> Path:
    """Append JSON lines atomically (the old content plus the new rows, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    text = old + "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def _n(x) -> str:
    return "–" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.3g}")


def markdown_table(rows, measured: dict | None = None) -> str:
    """Predicted beside measured (the newest triton row of the same workload, precision and K, and its GPU)."""
    measured = measured or {}
    out = ["| workload | precision | K | mode | warp instr / model-step | regs | spill B | predicted ms / 1000 steps "
           "| binds | calibrated ms | floor ms | floor | scratch live MB | measured ms | measured ÷ predicted |",
           "|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        meas, gpu = measured.get((r["workload"], r["precision"], r["K"]), (None, None))
        ratio = f"{meas / r['predicted_ms_per_1000_steps']:.2f}" if meas and r["predicted_ms_per_1000_steps"] else "–"
        out.append(f"| {r['workload']} | {r['precision']} | {r['K']:,} | {r['mode']} | "
                   f"{_n(r['warp_instructions_per_model_step'])} | {r['registers']} | {r['spill_bytes']} | "
                   f"{_n(r['predicted_ms_per_1000_steps'])} | {r['binding']} | {_n(r.get('calibrated_ms_per_1000_steps'))} | "
                   f"{_n(r['floor_ms_per_1000_steps'])} | "
                   f"{r['floor']} | {_n(r.get('scratch_live_mb'))} | {_n(meas)}{f' ({gpu})' if gpu else ''} | {ratio} |")
    return "\n".join(out) + "\n"
