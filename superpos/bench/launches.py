"""Interim: the launcher's real kernel calls, recorded without running them, and compiled for a GPU
target through the JIT's own binder (integer arguments specialized as on a GPU: == 1 becomes a
constexpr, divisibility by 16 an attribute).

The lead's `superpos.kernels.launch_capture` (issue 10, item 2) provides the same two functions;
costmodel imports them from one place (`costmodel._launch_api`) so that switching is one line.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass


@dataclass
class Launch:
    fn: object  # the JITFunction
    grid: tuple
    args: dict  # parameter name -> value as passed (tensors, ints, floats, constexprs)
    options: dict  # num_warps, num_stages, enable_fp_fusion, ...


@contextlib.contextmanager
def _recording(calls: list):
    from triton.runtime.jit import JITFunction
    run = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        names = [p.name for p in self.params]
        bound = dict(zip(names, args))
        options = {k: v for k, v in kwargs.items() if k not in names}
        bound.update({k: v for k, v in kwargs.items() if k in names})
        calls.append(Launch(self, tuple(grid), bound, options))
    JITFunction.run = record
    try:
        yield calls
    finally:
        JITFunction.run = run


def capture_launches(pop, cfg, **kernel_options) -> list:
    """Every kernel call `sp.train(pop, cfg, backend="triton", **kernel_options)` makes, in order, on
    CPU tensors (nothing runs; the training result is discarded)."""
    from ..train import train
    calls: list = []
    with _recording(calls):
        train(pop, cfg, backend="triton", device="cpu", **kernel_options)
    return calls


@functools.lru_cache(maxsize=None)
def _binder(fn, arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    return target, backend, create_function_from_signature(fn.signature, fn.params, backend)


def specialization_key(launch: Launch, arch: int = 90) -> tuple:
    """What decides which binary a call gets: the kernel, the binder's specialization of its
    arguments (types, constexpr 1s, divisibility) and its options."""
    _, _, binder = _binder(launch.fn, arch)
    _, specialization, options = binder(**launch.args, **launch.options)
    return (launch.fn.__name__, str(specialization), str(sorted(options.items())))


def compile_launch(launch: Launch, arch: int = 90):
    """The CompiledKernel a GPU of compute capability `arch` builds for this call (TRITON_INTERPRET
    must be unset in this process)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compile_launch needs TRITON_INTERPRET unset (compile in a subprocess)")
    import triton
    from triton.compiler import ASTSource
    target, backend, binder = _binder(launch.fn, arch)
    bound, specialization, options = binder(**launch.args, **launch.options)
    options, signature, constexprs, attrs = launch.fn._pack_args(backend, dict(launch.options), bound,
                                                                 specialization, options)
    return triton.compile(ASTSource(launch.fn, signature, constexprs, attrs), target=target,
                          options=options.__dict__)
