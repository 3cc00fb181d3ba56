"""Compile kernels exactly as their launches specialize them, on any machine (no GPU needed).

Triton's JIT specializes a launch's arguments before compiling: an int equal to 1 becomes a constexpr,
an int or pointer divisible by 16 gets a divisibility attribute, and each distinct specialization is its
own compile. A check that builds a kernel from hand-written signatures does not see those variants, so
this module records the launchers' real calls (`recording()`: nothing runs) and replays each through
the JIT's own `run(..., warmup=True)` path under a stand-in driver that names the GPU target, which
binds, specializes, packs and compiles exactly as a launch on that GPU would, without launching.
Resources (registers, stack, spills, shared memory) are then read off Triton's own cubin with the
`cuobjdump` shipped in the Triton wheel.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction


@dataclass
class Launch:
    """One recorded `kernel[grid](*args, **kwargs)` call."""

    fn: JITFunction
    grid: tuple
    args: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def bound(self) -> dict:
        """Parameter name -> value, as the kernel receives them (block sizes included)."""
        names = [p.name for p in self.fn.params]
        out = dict(zip(names, self.args))
        out.update({k: v for k, v in self.kwargs.items() if k in names})
        return out

    def specialization_key(self, arch: int) -> tuple:
        """What makes two launches one compile: the JIT binder's specialization and the options."""
        with target_driver(arch):
            binder = self.fn.create_binder()[-1]
            _, spec, options = binder(*self.args, **self.kwargs)
        return self.fn.__name__, arch, repr(spec), repr(sorted(options.items()))


@contextlib.contextmanager
def recording():
    """Inside: every JIT launch is appended to the yielded list instead of running (returns None)."""
    launches: list[Launch] = []
    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        if warmup:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        launches.append(Launch(self, tuple(grid) if not callable(grid) else grid, args, kwargs))
        return None

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


class _TargetDriver:
    """Stands in for the CUDA driver where there is no GPU: the JIT asks it only for the device, the
    stream and the target when compiling (warmup) without launching."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return f"as_launched:sm_{self.target.arch}"  # a key of the JIT's per-device caches

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        import torch
        return torch.device("cpu")


@contextlib.contextmanager
def target_driver(arch: int):
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compiling for a GPU target needs TRITON_INTERPRET unset")
    previous = driver._active
    driver.set_active(_TargetDriver(arch))
    try:
        yield
    finally:
        driver._active = previous


def compile_launch(launch: Launch, arch: int):
    """The CompiledKernel the launch would build on a GPU of compute capability `arch` (e.g. 90)."""
    with target_driver(arch):
        return launch.fn.run(*launch.args, grid=launch.grid, warmup=True, **launch.kwargs)


def cuda_tool(name: str) -> str:
    """Path of a CUDA binary utility shipped in the Triton wheel (cuobjdump, nvdisasm, ptxas)."""
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} is not in this Triton wheel ({path})")
    return path


def run_on_cubin(tool: str, flags: list, cubin: bytes) -> str:
    """stdout of a CUDA binary utility of the Triton wheel (cuobjdump, nvdisasm) run on a cubin."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        proc = subprocess.run([cuda_tool(tool), *flags, path], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{tool} failed: {proc.stderr.strip()}")
    return proc.stdout


def sass(compiled) -> str:
    """The kernel's SASS, as `cuobjdump -sass` prints it."""
    return run_on_cubin("cuobjdump", ["-sass"], compiled.asm["cubin"])


def resource_usage(compiled) -> dict:
    """Registers, stack bytes and shared memory of a compiled kernel, from `cuobjdump -res-usage` of its
    cubin (what the GPU loads), and its local-memory instructions: ptxas's spill report is not kept in
    the cubin, and STL/LDL appear in the SASS only for spills and stack arrays."""
    text = run_on_cubin("cuobjdump", ["-res-usage"], compiled.asm["cubin"])
    num = lambda pat: int(m.group(1)) if (m := re.search(pat, text)) else 0  # noqa: E731
    code = sass(compiled)
    return {"registers": num(r"REG:(\d+)"), "stack": num(r"STACK:(\d+)"), "smem_static": num(r"SHARED:(\d+)"),
            "shared": compiled.metadata.shared, "local": num(r"LOCAL:(\d+)"),
            "spill_store_instructions": len(re.findall(r"\bSTL(\.\w+)*\b", code)),
            "spill_load_instructions": len(re.findall(r"\bLDL(\.\w+)*\b", code))}
