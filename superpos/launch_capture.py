"""The kernel launches a training call makes, recorded through the public `sp.train` path without running.

`capture_launches(pop, cfg, **kernel_options)` runs `sp.train(pop, cfg, backend="triton", device="cpu")`
with every Triton launch recorded instead of executed (kernels.as_launched.recording), so what is
recorded is exactly what the launcher passes on a GPU: the same tensors' dtypes and alignment, the same
integers, block sizes and options. Compiling a recorded launch for a target (as_launched.compile_launch)
then goes through the JIT's own binder. Needs TRITON_INTERPRET unset (the interpreter replaces the JIT).
"""
from __future__ import annotations

import os

from .config import TrainConfig
from .spec import Population


def capture_launches(pop: Population, cfg: TrainConfig, **kernel_options) -> list:
    """Every launch of `sp.train(pop, cfg, backend="triton", **kernel_options)`, in order (not run)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("capture_launches needs TRITON_INTERPRET unset: the interpreter has no JIT launches")
    from .kernels.as_launched import recording
    from .train import train
    with recording() as launches:
        train(pop, cfg, backend="triton", device="cpu", **kernel_options)
    return launches


def capture_sample_batch(pop: Population, step: int, batch_size: int) -> list:
    """The launch of the debug batch kernel (kernels.philox_data.sample_batch_data) at `step`, with the
    population's data options."""
    from .kernels.as_launched import recording
    from .kernels.philox_data import sample_batch_data
    from .triton_backend import make_data
    data = make_data(pop, batch_size, "cpu")
    with recording() as launches:
        sample_batch_data(data, step)
    return launches


def distinct(launches: list, arch: int) -> list:
    """One launch per distinct compile on `arch` (the JIT's specialization key), first seen first."""
    seen, out = set(), []
    for launch in launches:
        key = launch.specialization_key(arch)
        if key not in seen:
            seen.add(key)
            out.append(launch)
    return out
