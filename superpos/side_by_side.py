"""Chunks trained side by side on one GPU.

A sweep whose chunks each keep only a few SMs busy - the double descent's 19 dataset sizes are 19 groups
of 3 models (T fixes the batch), each ~2 ms a step on 3 of an H200's 132 SMs, ~32 min one after another -
trains several chunks at once, each in its own thread and CUDA stream, so that their kernels run
concurrently. Every chunk is still one `train` call on its own models, so the results are bit-identical to
training the chunks one at a time (a model's result depends on its seed and config alone). Launches from
the threads are serialized (kernels.specialize.LAUNCH_LOCK: Triton's JIT is not thread-safe); the GPU runs
the launched kernels side by side.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch

# threads: the double descent's 19 chunks run in two rounds; each thread's launches (split mode: two per
# step, ~30 us of Python under the GIL) stay well under a small chunk's ~2 ms GPU step at 16
MAX_SIDE_BY_SIDE = 16


class Stopped(Exception):
    """Raised in a chunk's progress callback once another chunk failed or the run was interrupted."""


def programs_per_launch(group, models: int, sms: int, capability=None, precision: str = "ieee") -> int:
    """GPU programs one training launch of `models` models of `group` runs at once (the triton backend,
    with the blocks it picks for a GPU of this compute capability and matmul precision: the slice differs
    on Hopper)."""
    from .kernels.configs import choose_config, use_split
    from .triton_backend import family_config

    B = group.data.batch_size(group.cfg.batch_size)
    kcfg = choose_config(group.spec.n_features, group.spec.n_hidden, group.cfg.batch_size, precision,
                         **family_config(group.spec, group.data), capability=capability)
    if kcfg.kind == "small" or not use_split(kcfg, models, sms):
        return models
    return models * -(-B // kcfg.slice_size)


def auto_count(chunks, sms: int, free_bytes: int) -> int:
    """How many chunks to train at once: `chunks` is [(programs, bytes)] of the chunks still to train.
    Enough that the typical chunk's programs fill the SMs about twice over (a resident program per SM
    leaves the scheduler idle between dependent steps), no more than MAX_SIDE_BY_SIDE, and only as many
    as the largest chunk fits in half the free memory that many times."""
    if len(chunks) < 2:
        return 1
    typical = sorted(p for p, _ in chunks)[len(chunks) // 2]
    count = min(MAX_SIDE_BY_SIDE, len(chunks), max(1, 2 * sms // max(1, typical)))
    largest = max(b for _, b in chunks)
    return max(1, min(count, int(free_bytes // 2 // max(1, largest))))


def run(todo, count: int, train_chunk, device: torch.device, stop: threading.Event) -> None:
    """train_chunk(i) for every i of `todo`, `count` at a time, each worker on its own CUDA stream (on a
    GPU). The first failure, or an interrupt of the caller, sets `stop` (chunks in flight end at their next
    progress report, raising Stopped; queued ones never start); that error is raised once all have ended."""
    def work(i):
        if stop.is_set():
            raise Stopped
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                train_chunk(i)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="superpos-chunk") as pool:
        futures = [pool.submit(work, i) for i in todo]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # KeyboardInterrupt while waiting: stop the workers, then re-raise
            stop.set()
            raise
        finally:
            if stop.is_set():
                for f in futures:
                    f.cancel()
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Stopped)]
    if errors:
        raise (real or errors)[0]
