"""Triton's interpreter (TRITON_INTERPRET=1) passes a Python float kernel argument on as a Python float,
so arithmetic on it runs in float64 there while a compiled launch types it float32. `1.0 - beta2` with
beta2 = 0.999 gives 0.001 under the interpreter and 0.0009999871 on a GPU: the kernels' AdamW once had
that bias in every second-moment update, seen only on a GPU (an H200 at n=400 after 50 steps).
float_args_as_float32() makes the interpreter hand such arguments over as float32 scalars, as a launch
does; the triton backend on the CPU (superpos.triton_backend.check_device), the test suite and
bench/accuracy_trace.py --device cpu install it."""
import numpy as np


def float_args_as_float32() -> bool:
    """Patch the interpreter's argument conversion (idempotent); False where this Triton has none."""
    from triton.runtime import interpreter
    import triton.language as tl

    plain = getattr(interpreter, "_implicit_cvt", None)
    if plain is None or getattr(plain, "float32_scalars", False):
        return plain is not None

    def implicit_cvt(arg):
        if isinstance(arg, float):
            return tl.tensor(interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
        return plain(arg)
    implicit_cvt.float32_scalars = True
    interpreter._implicit_cvt = implicit_cvt
    return True
