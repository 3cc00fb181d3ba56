"""Compile every shipped kernel configuration for a GPU target on any machine (no GPU needed) and read
ptxas's resource report: registers, spill bytes, shared memory. `python -m superpos.kernels.compile_check`
prints the table; tests/test_compile.py asserts no spills.
"""
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .configs import choose_config
from .philox_data import _sample_batch_kernel
from .train_small import _train_small_kernel
from .train_tiled import _tiled_grads_kernel, _tiled_update_kernel, _train_tiled_kernel

# Shapes the tests and the paper's experiments use (n, m, batch).
# The last two reach the limits: n=1024 with m=1 (MP=16) and m=64 (MP=64).
SHAPES = [(2, 1, 1024), (3, 2, 1024), (5, 2, 1024), (20, 5, 1024), (37, 5, 1024),
          (200, 20, 1024), (400, 30, 1024), (1024, 1, 1024), (1024, 64, 1024)]
ARCHS = (90, 80)


_INTS = {"n", "m", "B", "t", "t0", "n_steps", "total_steps", "log_every", "n_log", "n_slices", "step"}
_FLOATS = {"coef", "inv_bn", "beta1", "beta2", "eps"}


def _signature(fn, consts):
    """Triton signature of fn's parameters: int32 / float32 scalars by name, int64 seeds, int32 thresholds,
    float32 pointers for the rest, constexpr for the block sizes."""
    def kind(name):
        if name in consts:
            return "constexpr"
        if name in _INTS:
            return "i32"
        if name in _FLOATS:
            return "fp32"
        return {"seed_ptr": "*i64", "thr_ptr": "*i32"}.get(name, "*fp32")
    return {name: kind(name) for name in fn.arg_names}


def kernel_sources(cfg, relu=True):
    """(name, ASTSource, compile options) for every kernel the launcher may pick for this config."""
    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if cfg.kind == "small":
        kernels = [(_train_small_kernel, {"MP": cfg.MP, "NP": cfg.NP, "BG": cfg.BG, "RELU": relu})]
    else:
        grads = {"MP": cfg.MP, "NC": cfg.NP, "BG": cfg.BG, "SLICE": cfg.slice_size, "RELU": relu,
                 "PREC": cfg.input_precision}
        kernels = [(_train_tiled_kernel, grads)] if cfg.fused_ok else []  # configs.use_split
        kernels += [(_tiled_grads_kernel, grads), (_tiled_update_kernel, {"MP": cfg.MP, "NC": cfg.NP})]
    out = [(fn.__name__, ASTSource(fn, _signature(fn, c), constexprs=c), options) for fn, c in kernels]
    samp_consts = {"BG": 16, "NC": 64}  # what philox_data.sample_batch launches for batch >= 64, n >= 64
    out.append((_sample_batch_kernel.__name__,
                ASTSource(_sample_batch_kernel, _signature(_sample_batch_kernel, samp_consts), constexprs=samp_consts),
                {"num_warps": 4}))
    return out


def ptxas_report(ptx: str, arch: int) -> dict:
    """Registers, spill bytes and shared memory that ptxas -v reports for a PTX module."""
    from triton.backends.nvidia.compiler import get_ptxas
    try:
        ptxas = get_ptxas(arch)  # Triton >= 3.6 takes the target
    except TypeError:
        ptxas = get_ptxas()
    ptxas = getattr(ptxas, "path", ptxas)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)  # e.g. sm_90a, as Triton emitted it
        proc = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", src, "-o", os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode:
        raise RuntimeError(f"ptxas failed for sm_{arch}: {text.strip()}")
    num = lambda pat: int(m.group(1)) if (m := re.search(pat, text)) else 0
    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "stack": num(r"(\d+) bytes stack frame"),
            "smem_ptxas": num(r"(\d+) bytes smem")}


def compile_report(shapes=SHAPES, archs=ARCHS, precisions=("ieee", "tf32"), activations=(True, False)):
    """One row per (shape, arch, kernel, precision): the config and ptxas's figures."""
    rows, seen = [], set()
    for n, m, batch in shapes:
        for prec in precisions:
            cfg = choose_config(n, m, batch, prec)
            if cfg.kind == "small" and prec != "ieee":
                continue  # the small kernel has no tl.dot: precision does not apply
            for arch in archs:
                for relu in activations:
                    for name, src, options in kernel_sources(cfg, relu):
                        key = (name, str(src.constants), str(options), arch)
                        if key in seen:
                            continue
                        seen.add(key)
                        ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
                        rep = ptxas_report(ck.asm["ptx"], arch)
                        rows.append({"n": n, "m": m, "batch": batch, "arch": f"sm_{arch}", "kernel": name,
                                     "relu": relu, "precision": prec, "config": cfg, "num_warps": options["num_warps"],
                                     "shared": ck.metadata.shared, **rep})
    return rows


def main():
    rows = compile_report()
    print(f"{'n':>5} {'m':>3} {'arch':>6} {'kernel':<22} {'relu':>5} {'prec':>5} {'MP':>3} {'NP/NC':>5} {'BG':>4}"
          f" {'warps':>5} {'regs':>5} {'spill st':>8} {'spill ld':>8} {'smem':>6}")
    for r in rows:
        c = r["config"]
        print(f"{r['n']:>5} {r['m']:>3} {r['arch']:>6} {r['kernel']:<22} {str(r['relu']):>5} {r['precision']:>5}"
              f" {c.MP:>3} {c.NP:>5} {c.BG:>4} {r['num_warps']:>5} {r['registers']:>5} {r['spill_stores']:>8}"
              f" {r['spill_loads']:>8} {r['shared']:>6}")
    spills = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    print(f"{len(rows)} kernels compiled, {len(spills)} with spills")
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
