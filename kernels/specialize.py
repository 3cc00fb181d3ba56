"""How the launched kernels are specialized (block sizes are constexprs, runtime integers are not) and launched.

Triton's JIT would otherwise compile a separate kernel for an int equal to 1 (a constexpr: `step.to()`
then fails at step 1) and for an int divisible by 16 (a divisibility hint that changed the n=400 tiled
kernel from no spills to 400 bytes of stack). Values that change per launch (t, t0, n_steps) would also
recompile on the GPU mid-run. Not specializing them makes one compile per configuration, the same for
every shape and step, which is what superpos.compile_check verifies.
"""
import threading

import triton

# Launches from several threads (superpos.side_by_side: chunks trained at once, each on its own CUDA
# stream) take this lock: Triton's JIT (its caches and compiles on a kernel's first launch) is not
# thread-safe. Launching is Python work under the GIL anyway; the GPU still runs the kernels side by side.
LAUNCH_LOCK = threading.Lock()

RUNTIME_INTS = ("n", "m", "B", "T", "t", "t0", "step", "n_steps", "total_steps", "log_every", "n_log", "n_slices")


def kernel(fn):
    """@triton.jit with the runtime integers above left unspecialized (names absent from fn are ignored)."""
    return triton.jit(fn, do_not_specialize=RUNTIME_INTS)
