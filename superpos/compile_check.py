"""Compile what the launches compile, for every GPU target researchers use, on a machine with no GPU.

For each shape, the launcher's real calls are captured through `sp.train(..., backend="triton")`
(superpos.launch_capture: steps 0, 1 and 2 as separate launches, plus one multi-step launch, in every
launch mode the launcher can pick, relu and linear, each precision), every distinct specialization is
compiled through the JIT's binder for each target, and registers, stack (spills) and shared memory are
read from Triton's own cubin with `cuobjdump -res-usage`.

    python -m superpos.compile_check [--arch 90,80,...] [--shape N,M ...] [--variants all] [--json]

--variants adds the model families and data options of issue 13 (VARIANTS) where the kernel of a shape
implements them (today the small kernel).

Exit status 1 if any kernel fails to compile or spills on sm_90 or sm_80 (the GPUs the kernels are
built for); spills on consumer targets are listed with their size. tests/test_compile.py runs a subset.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# (n, m) of the paper's experiments and the tests, and the limits: n=1024 with m=1 (MP=16) and m=64 (MP=64).
SHAPES = [(2, 1), (3, 2), (5, 2), (20, 5), (37, 5), (200, 20), (400, 30), (1024, 1), (1024, 64)]
BATCH = 1024
# Compute capabilities: H100/H200, A100 (the GPUs the kernels are built for), and T4, RTX 30xx / A10,
# RTX 40xx / L4 (what researchers also use).
PRIMARY_ARCHS = (90, 80)
CONSUMER_ARCHS = (75, 86, 89)
ARCHS = PRIMARY_ARCHS + CONSUMER_ARCHS
# Model families and data options (issue 13) beyond the plain model: name -> (ModelSpec keywords, DataSpec
# keywords for n features). Checked where the kernel a shape gets implements them (the small kernel).
VARIANTS = {
    "plain": ({}, lambda n: {}),
    "privileged": ({"hidden_activation": "relu"}, lambda n: {}),
    "untied-abs": ({"tied": False, "hidden_activation": "relu", "target": "abs", "value_range": "symmetric"},
                   lambda n: {}),
    "sets": ({}, lambda n: {"correlated_sets": [[0, 1]]} | ({"anticorrelated_sets": [list(range(2, min(n, 5)))]}
                                                          if n >= 4 else {})),
    "dataset": ({"value_range": "symmetric"}, lambda n: {"dataset_size": 3 * BATCH + 2}),
}


def variant_population(n: int, m: int, activation: str, variant: str, K: int):
    """A population of K models of this shape in one of VARIANTS (densities 0.1: sets sum to <= 1)."""
    from .spec import DataSpec, ModelSpec, Population
    spec_kw, data_kw = VARIANTS[variant]
    return Population(ModelSpec(n, m, activation, **spec_kw), feature_probability=0.1, importance=1.0,
                      seed=np.arange(K), data=DataSpec(**data_kw(n)))


def shape_launches(n: int, m: int, batch: int = BATCH, precisions=("ieee", "tf32x3", "tf32"), activations=("relu", "linear"),
                   variants=("plain",), capability=None):
    """[(label dict, Launch)] for every launch the launcher may make for this shape (and each variant
    the kernel of this shape implements) on a GPU of this compute capability (None: the generic blocks;
    kernels.configs.TILED_SM90_PLAIN differ on Hopper, (9, 0))."""
    from .kernels.configs import target_capability
    out = []
    with target_capability(capability):
        for variant in variants:
            out += _variant_launches(n, m, batch, precisions, activations, variant, capability)
    return out


def _capability_class(arch: int):
    """The capability whose blocks a target gets: Hopper (9, 0), the generic table elsewhere."""
    return (9, 0) if arch // 10 == 9 else None


def _variant_launches(n, m, batch, precisions, activations, variant, capability=None):
    """shape_launches for one variant ([] where the launcher has no kernel for it)."""
    from .config import TrainConfig
    from .kernels.configs import choose_config
    from .launch_capture import capture_launches, capture_sample_batch
    from .triton_backend import family_config, unsupported_by_kernels

    out = []
    if unsupported_by_kernels(variant_population(n, m, "relu", variant, 1), batch) is not None:
        return out  # the launcher refuses it (triton_backend.KERNEL_SUPPORTS)
    for activation in activations:
        pop = variant_population(n, m, activation, variant, 4)
        for prec in precisions:
            kcfg = choose_config(n, m, batch, prec, **family_config(pop.spec, pop.data), capability=capability)
            if kcfg.kind == "small" and prec != precisions[0]:
                continue  # no tl.dot in the small kernel: the precision does not change it
            modes = [None] if kcfg.kind == "small" else [True] + ([False] if kcfg.fused_ok else [])
            for split in modes:
                opts = {"input_precision": prec} | ({} if split is None else {"split": split})
                mode = "small" if split is None else ("split" if split else "fused")
                label = {"n": n, "m": m, "activation": activation, "precision": prec, "mode": mode,
                         "MP": kcfg.MP, "NP": kcfg.NP, "BG": kcfg.BG, "variant": variant}
                # steps 0, 1, 2 one launch each (an int equal to 1 is what the JIT specializes), then 3 in one
                stepwise = capture_launches(pop, TrainConfig(steps=3, batch_size=batch), max_steps_per_launch=1, **opts)
                whole = capture_launches(pop, TrainConfig(steps=3, batch_size=batch), **opts)
                out += [(label, launch) for launch in stepwise + whole]
    pop = variant_population(n, m, "relu", variant, 2)
    for step in (0, 1, 2):
        label = {"n": n, "m": m, "activation": "-", "precision": "-", "mode": "debug", "MP": 0, "NP": 0, "BG": 0,
                 "variant": variant}
        out += [(label, launch) for launch in capture_sample_batch(pop, step, batch)]
    return out


def compile_report(shapes=SHAPES, archs=ARCHS, precisions=("ieee", "tf32x3", "tf32"), activations=("relu", "linear"),
                   progress=None, variants=("plain",)) -> list:
    """One row per distinct compile: the launch's label, the target, and the compiled resources (or the error)."""
    from .kernels.as_launched import compile_launch, resource_usage
    from .triton_backend import unsupported_reason

    rows = []
    for n, m in shapes:
        by_class = {}  # the launches for each capability class (captured once per class)
        seen = set()  # per shape: with n, m unspecialized, shapes of one config share a compile (cached)
        for arch in archs:
            cls = _capability_class(arch)
            if cls not in by_class:
                by_class[cls] = shape_launches(n, m, precisions=precisions, activations=activations,
                                               variants=variants, capability=cls)
            for label, launch in by_class[cls]:
                key = launch.specialization_key(arch)
                if key in seen:
                    continue
                seen.add(key)
                row = {**label, "arch": f"sm_{arch}", "kernel": launch.name,
                       "num_warps": launch.kwargs.get("num_warps", 4), "refused": "", "compile_s": 0.0}
                refused = unsupported_reason((arch // 10, arch % 10), label["precision"])
                if refused:  # the launcher never runs this on such a GPU: record why, do not compile
                    rows.append({**row, "refused": refused, "error": ""})
                    continue
                t = time.perf_counter()
                try:
                    row.update(resource_usage(compile_launch(launch, arch)), error="")
                except Exception as e:  # a target Triton cannot build this kernel for: say why, go on
                    row.update(error=_one_line(e))
                row["compile_s"] = round(time.perf_counter() - t, 2)
                rows.append(row)
                if progress:
                    progress(row)
    return rows


def _one_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:200]


def spills(row) -> bool:
    return bool(row.get("stack") or row.get("spill_store_instructions") or row.get("spill_load_instructions"))


def verdict(rows) -> tuple[list, list, list]:
    """(failures on primary targets, spills on primary targets, problems on consumer targets)."""
    primary = {f"sm_{a}" for a in PRIMARY_ARCHS}
    built = [r for r in rows if not r["refused"]]
    fail = [r for r in built if r["arch"] in primary and r["error"]]
    spill = [r for r in built if r["arch"] in primary and not r["error"] and spills(r)]
    other = [r for r in built if r["arch"] not in primary and (r["error"] or spills(r))]
    return fail, spill, other


HEADER = (f"{'n':>5} {'m':>3} {'variant':>10} {'act':>6} {'prec':>5} {'mode':>6} {'arch':>6} {'kernel':<22} {'warps':>5}"
          f" {'regs':>5} {'stack':>6} {'smem':>6} {'s':>5}  error")


def format_row(r) -> str:
    return (f"{r['n']:>5} {r['m']:>3} {r.get('variant', 'plain'):>10} {r['activation']:>6} {r['precision']:>5} {r['mode']:>6} {r['arch']:>6}"
            f" {r['kernel']:<22} {r['num_warps']:>5} {r.get('registers', '-'):>5} {r.get('stack', '-'):>6}"
            f" {r.get('shared', '-'):>6} {r['compile_s']:>5}  {r['error'] or r['refused']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m superpos.compile_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=",".join(map(str, ARCHS)), help="compute capabilities, e.g. 90,80")
    ap.add_argument("--shape", nargs="*", default=None, help="N,M pairs (default: the paper's shapes and limits)")
    ap.add_argument("--json", action="store_true", help="one JSON object per compiled kernel")
    ap.add_argument("--variants", default="plain", help=f"comma-separated model families / data options: "
                                                        f"{', '.join(VARIANTS)}, or all (default: plain)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_check: unset TRITON_INTERPRET (it replaces the JIT this check compiles through)", file=sys.stderr)
        return 2
    try:
        archs = tuple(int(a) for a in args.arch.split(","))
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape] if args.shape else SHAPES
        if any(len(s) != 2 for s in shapes):
            raise ValueError
        variants = tuple(VARIANTS) if args.variants == "all" else tuple(args.variants.split(","))
        if not set(variants) <= set(VARIANTS):
            print(f"compile_check: --variants takes {', '.join(VARIANTS)} or all", file=sys.stderr)
            return 2
    except ValueError:
        print("compile_check: --arch takes integers like 90,80 and --shape N,M pairs", file=sys.stderr)
        return 2
    if not args.json:
        print(HEADER)
    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else (lambda r: print(format_row(r), flush=True))
    rows = compile_report(shapes, archs, progress=emit, variants=variants)
    fail, spill, other = verdict(rows)
    refused = sum(1 for r in rows if r["refused"])
    summary = (f"{len(rows) - refused} kernels compiled as launched for {', '.join(f'sm_{a}' for a in archs)}"
               f" ({refused} refused by the launcher on that target): {len(fail)} failed and {len(spill)} spilled"
               f" on sm_90/sm_80; {len(other)} problems on other targets")
    print(summary, file=sys.stderr if args.json else sys.stdout)
    for r in other:
        what = r["error"] or f"{r['stack']} bytes of stack"
        print(f"  {r['arch']} {r['kernel']} n={r['n']} m={r['m']} {r['precision']}: {what}",
              file=sys.stderr if args.json else sys.stdout)
    return 1 if fail or spill else 0


if __name__ == "__main__":
    sys.exit(main())
