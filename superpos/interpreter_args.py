"""Triton's interpreter (TRITON_INTERPRET=1) passes a Python float kernel argument on as a Python float,
so arithmetic on it runs in float64 there while a compiled launch types it float32. `1.0 - beta2` with
beta2 = 0.999 gives 0.001 under the interpreter and 0.0009999871 on a GPU: the kernels' AdamW once had
that bias in every second-moment update, seen only on a GPU (an H200 at n=400 after 50 steps).
float_args_as_float32() makes the interpreter hand such arguments over as float32 scalars, as a launch
does; interpret_as_a_gpu_launch() installs it with the interpreter shortcuts, for the triton backend on
the CPU (superpos.triton_backend.train_triton), the test suite and bench/accuracy_trace.py --device cpu."""
import numpy as np


def float_args_as_float32() -> bool:
    """Patch the interpreter's argument conversion (idempotent); False where this Triton has none."""
    return replace_in_interpreter("_implicit_cvt", _float32_scalars, "float32_scalars")


def _float32_scalars(plain):
    from triton.runtime import interpreter
    import triton.language as tl

    def implicit_cvt(arg):
        if isinstance(arg, float):
            return tl.tensor(interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
        return plain(arg)
    return implicit_cvt


def replace_in_interpreter(name: str, make, marker: str) -> bool:
    """interpreter.<name> := make(Triton's function), once: the replacement carries `marker`, and a second
    call finds it; False where this Triton's interpreter has no such function."""
    from triton.runtime import interpreter
    original = getattr(interpreter, name, None)
    if original is None:
        return False
    if not getattr(original, marker, False):
        replacement = make(original)
        setattr(replacement, marker, True)
        setattr(interpreter, name, replacement)
    return True


def interpret_as_a_gpu_launch() -> None:
    """What every interpreted run installs: float arguments as float32 (here) and the interpreter's
    per-call repeats done once (superpos.interpreter_shortcuts, same results)."""
    from .interpreter_shortcuts import install
    float_args_as_float32()
    install()
