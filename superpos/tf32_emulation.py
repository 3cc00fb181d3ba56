"""TF32 tensor-core arithmetic emulated in numpy, and Triton's interpreter taught it (figures from it are
"emulated": only a GPU measures).

Why: Triton's interpreter (TRITON_INTERPRET=1, how the kernel tests run on the CPU) computes every tl.dot in
float32 whatever its input_precision. Under it `tf32` is as accurate as `ieee`, and tf32x3's operand split
(kernels/train_tiled.py, _split and _dot) is never put to the test: a split that kept the float32 operands
whole would pass every test and lose the tf32x3 accuracy on a GPU. `emulate_tf32_dots()` makes the
interpreter compute tl.dot(..., input_precision="tf32") the way a TF32 mma does:

- an mma reads only the top 19 bits of each float32 operand (sign, exponent, 10 mantissa bits: the low 13
  are dropped, i.e. truncated), and the products of two such values are exact;
- per mma of k = 8 the 8 products and the float32 accumulator are added and rounded into float32. How is
  not documented; Fasi, Higham, Mikaitis and Pranesh (2021, "Numerical behavior of NVIDIA tensor cores")
  found truncation on V100-A100. Three models, from kind to harsh:
    rn          the exact sum rounded to nearest;
    rz          the exact sum rounded toward zero;
    rz-aligned  every term first cut (toward zero) to the float32 grid of the largest term, no guard bits,
                and the sum rounded toward zero: alignment with truncation, the harshest reading of that
                paper.
ieee dots (FMA on CUDA cores) and Triton's own "tf32x3" keep the interpreter's float32 matmul.
"""
import contextlib

import numpy as np

TF32_DROP = np.uint32(0x1FFF)  # the 13 mantissa bits a TF32 mma ignores
MMA_K = 8
ROUNDINGS = ("rn", "rz", "rz-aligned")


def truncate_tf32(a: np.ndarray) -> np.ndarray:
    """What a TF32 mma reads of float32 values: the low 13 mantissa bits dropped (toward zero)."""
    return (np.asarray(a, dtype=np.float32).view(np.uint32) & ~TF32_DROP).view(np.float32)


def round_tf32(a: np.ndarray) -> np.ndarray:
    """float32 rounded to the nearest tf32, ties away from zero (cvt.rna.tf32.f32; _split's integer form)."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & ~TF32_DROP).view(np.float32)


def to_float32(x: np.ndarray, rounding: str) -> np.ndarray:
    """float64 values to float32, to nearest ("rn") or toward zero (the other models)."""
    f = x.astype(np.float32)
    if rounding != "rn":
        over = np.abs(f.astype(np.float64)) > np.abs(x)  # rounded away from zero: step back one ulp
        f = np.where(over, np.nextafter(f, np.float32(0)), f)
    return f


def _aligned(terms: np.ndarray) -> np.ndarray:
    """terms [..., j] cut toward zero to the float32 grid (24 significant bits) of the largest |term| of
    their row: what an adder that aligns to the largest exponent without guard bits keeps."""
    _, e = np.frexp(np.abs(terms).max(-1, keepdims=True))  # largest = f 2^e, f in [0.5, 1)
    grid = np.ldexp(1.0, e - 24)
    return np.trunc(terms / grid) * grid  # exact: powers of two and float64 values of <= 25 bits


def mma_dot(a: np.ndarray, b: np.ndarray, acc: np.ndarray, rounding: str) -> np.ndarray:
    """acc + sum_k a[..., k] b[..., k] as TF32 mmas of k = 8 do it (leading axes: independent dot products,
    broadcast)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    a, b = truncate_tf32(a).astype(np.float64), truncate_tf32(b).astype(np.float64)
    acc = np.asarray(acc, dtype=np.float32)
    for k0 in range(0, a.shape[-1], MMA_K):
        products = a[..., k0:k0 + MMA_K] * b[..., k0:k0 + MMA_K]  # exact: 11 x 11 significant bits
        if rounding == "rz-aligned":
            acc64 = np.broadcast_to(acc.astype(np.float64), products.shape[:-1])[..., None]
            exact = _aligned(np.concatenate([acc64, products], -1)).sum(-1)
        else:
            exact = acc.astype(np.float64) + products.sum(-1)  # <= 9 terms of <= 24 bits: exact
        acc = to_float32(exact, rounding)
    return acc


def mma_matmul(a: np.ndarray, b: np.ndarray, acc: np.ndarray, rounding: str) -> np.ndarray:
    """acc + a @ b ([..., M, K] @ [..., K, N]) as TF32 mmas compute it."""
    return mma_dot(a[..., :, None, :], np.swapaxes(b, -1, -2)[..., None, :, :], acc, rounding)


_ROUNDING = {"now": None}  # the interpreter's tf32 dots: None = its own float32 matmul, else a ROUNDINGS model


def _check(rounding):
    if rounding is not None and rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)} (or None: float32), got {rounding!r}")


def _install() -> None:
    """Wrap the interpreter's create_dot once (whatever it is then: bench/accuracy_trace.py's --fma-dot
    keeps its ieee dots); the wrapper reads _ROUNDING at each dot."""
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "tf32_emulation", False):
        return
    plain = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        rounding = _ROUNDING["now"]
        if rounding is None or input_precision != ir.INPUT_PRECISION.TF32 or not all(
                t.data.dtype == np.float32 for t in (a, b, d)):
            return plain(self, a, b, d, input_precision, max_num_imprecise_acc)
        return interpreter.TensorHandle(mma_matmul(a.data, b.data, d.data, rounding), d.dtype.scalar)
    create_dot.tf32_emulation = True
    builder.create_dot = create_dot


def emulate_tf32_dots_from_now(rounding: str | None = "rz") -> None:
    """From now on Triton's interpreter computes tl.dot(..., input_precision="tf32") on float32 operands as
    TF32 mmas do (mma_matmul with `rounding`; None: back to its float32 matmul); other dots as before. The
    test suite installs "rz" (tests/conftest.py)."""
    _check(rounding)
    _install()
    _ROUNDING["now"] = rounding


@contextlib.contextmanager
def emulate_tf32_dots(rounding: str | None = "rz"):
    """emulate_tf32_dots_from_now(rounding) within, the previous setting after."""
    before = _ROUNDING["now"]
    emulate_tf32_dots_from_now(rounding)
    try:
        yield
    finally:
        _ROUNDING["now"] = before
