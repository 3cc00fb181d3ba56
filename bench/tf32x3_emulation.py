"""How accurate is a 3xTF32 dot product? A numpy emulation of the tensor cores' TF32 arithmetic, to compare
ways of splitting float32 operands on the CPU (label its figures "emulated"; only a GPU measures).

    python bench/tf32x3_emulation.py [--k 128,400] [--trials 2000] [--json]

The mma model is superpos/tf32_emulation.py's (which the kernel tests also run the interpreter's tl.dot
through): operands truncated to tf32, exact products, and per mma of k = 8 the sum rounded into the
float32 accumulator to nearest (`rn`), toward zero (`rz`), or toward zero after aligning every term to the
largest one's grid (`rz-aligned`).

Splits of an operand a into (hi, lo), three products hi_a hi_b + hi_a lo_b + lo_a hi_b:
    rn-trunc: hi = a rounded to the nearest tf32, lo = a - hi, which the mma then truncates to tf32
              (kernels/train_tiled.py's _split before 2026-11-27, ninth session)
    rn-rn:    hi as above, lo = (a - hi) rounded to the nearest tf32 (what the mma reads is exact)
beside ieee: float32 FMA in order (what the ieee kernels compute). Error: |dot - exact| / sum |a_i b_i|
(the float64 dot as exact), in units of 2^-24, over random dot products whose terms cancel (mixed signs,
as gradients' sums do), each chain of k products accumulated in mma steps of 8 into one accumulator.
"""
import argparse
import json
import sys

import numpy as np

from superpos.tf32_emulation import ROUNDINGS, mma_dot, round_tf32


def split(a: np.ndarray, scheme: str) -> tuple:
    hi = round_tf32(a)
    lo = (a.astype(np.float32) - hi).astype(np.float32)  # exact: hi holds a's leading bits
    if scheme == "rn-rn":
        lo = round_tf32(lo)
    elif scheme != "rn-trunc":
        raise ValueError(f"scheme must be rn-trunc or rn-rn, got {scheme!r}")
    return hi, lo


def tf32x3_dot(a: np.ndarray, b: np.ndarray, scheme: str, rounding: str, chunk: int = 0) -> np.ndarray:
    """Three products, small ones first, into a fresh accumulator (kernels/train_tiled.py's _dot); with
    `chunk`, one such call per `chunk` terms, each added to the running sum in float32 (FADD, to nearest):
    the kernel's passes over features call _dot once per 16-feature chunk."""
    a_hi, a_lo = split(a, scheme)
    b_hi, b_lo = split(b, scheme)
    step = chunk or a.shape[-1]
    total = np.zeros(a.shape[:-1], dtype=np.float32)
    for k0 in range(0, a.shape[-1], step):
        part = np.s_[..., k0:k0 + step]
        acc = np.zeros(a.shape[:-1], dtype=np.float32)
        acc = mma_dot(a_lo[part], b_hi[part], acc, rounding)
        acc = mma_dot(a_hi[part], b_lo[part], acc, rounding)
        acc = mma_dot(a_hi[part], b_hi[part], acc, rounding)
        total = acc if chunk == 0 else (total + acc).astype(np.float32)
    return total


def fma_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 FMA in order: each step rounds the exact a b + acc once."""
    acc = np.zeros(a.shape[:-1], dtype=np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for k in range(a.shape[-1]):
        acc = (acc.astype(np.float64) + a64[..., k] * b64[..., k]).astype(np.float32)
    return acc


def operands(k: int, trials: int, rng) -> tuple:
    """Dot products whose terms cancel: mixed signs, magnitudes spread over two decades."""
    a = (rng.standard_normal((trials, k)) * 10.0 ** rng.uniform(-1, 1, (trials, k))).astype(np.float32)
    b = (rng.standard_normal((trials, k)) * 10.0 ** rng.uniform(-1, 1, (trials, k))).astype(np.float32)
    return a, b


def errors(a: np.ndarray, b: np.ndarray) -> dict:
    """|dot - exact| / sum |a b| in units of 2^-24 per method (signed mean too: a bias shows there)."""
    exact = (a.astype(np.float64) * b.astype(np.float64)).sum(-1)
    scale = np.abs(a.astype(np.float64) * b.astype(np.float64)).sum(-1) * 2.0 ** -24
    got = {"ieee (fp32 FMA)": fma_dot(a, b)}
    for scheme in ("rn-trunc", "rn-rn"):
        for rounding in ROUNDINGS:
            got[f"tf32x3 {scheme}, mma {rounding}"] = tf32x3_dot(a, b, scheme, rounding)
    for rounding in ROUNDINGS:  # the kernel's passes over features: one _dot per 16-feature chunk
        got[f"tf32x3 rn-trunc, mma {rounding}, 16 a call"] = tf32x3_dot(a, b, "rn-trunc", rounding, chunk=16)
    out = {}
    for name, value in got.items():
        err = (value.astype(np.float64) - exact) / scale
        out[name] = {"median": float(np.median(np.abs(err))), "p99": float(np.quantile(np.abs(err), 0.99)),
                     "mean_signed": float(err.mean())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", default="128,400", help="dot-product lengths (comma-separated)")
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for k in (int(v) for v in args.k.split(",")):
        res = errors(*operands(k, args.trials, rng))
        if args.json:
            print(json.dumps({"k": k, "trials": args.trials, "errors_in_2^-24": res}))
            continue
        print(f"k = {k}, {args.trials} dot products (emulated; error / sum|a b| in units of 2^-24)")
        for name, e in res.items():
            print(f"  {name:38s} median {e['median']:8.2f}  p99 {e['p99']:8.2f}  mean signed {e['mean_signed']:+8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
