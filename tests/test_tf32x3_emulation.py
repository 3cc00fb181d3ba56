"""bench/tf32x3_emulation.py: the numpy model of TF32 tensor-core arithmetic that compares operand splits
on the CPU. Checked against hand-computed cases, so that its figures mean what it says."""
import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location("tf32x3_emulation",
                                              Path(__file__).resolve().parents[1] / "bench" / "tf32x3_emulation.py")
emu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(emu)


def test_tf32_truncation_and_rounding_keep_ten_mantissa_bits():
    one_plus = np.float32(1.0) + np.float32(2.0 ** -10)  # exactly a tf32 value
    assert emu.truncate_tf32(np.array([one_plus]))[0] == one_plus
    below_half = np.float32(1.0 + 2.0 ** -12)  # 1 + a quarter of tf32's ulp at 1
    above_half = np.float32(1.0 + 2.0 ** -11 + 2.0 ** -12)  # three quarters of it
    assert emu.truncate_tf32(np.array([above_half]))[0] == 1.0
    assert emu.round_tf32(np.array([below_half, above_half])).tolist() == [1.0, 1.0 + 2.0 ** -10]
    assert emu.round_tf32(np.array([-above_half]))[0] == -(1.0 + 2.0 ** -10)  # sign-magnitude: symmetric
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    for f in (emu.truncate_tf32, emu.round_tf32):
        assert not (f(x).view(np.uint32) & emu.TF32_DROP).any()


def test_splits_hold_the_operand():
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    hi, lo = emu.split(x, "rn-trunc")
    assert np.array_equal(hi + lo, x)  # a - hi is exact, so nothing is lost before the mma reads it
    hi2, lo2 = emu.split(x, "rn-rn")
    assert np.array_equal(hi2, hi) and not (lo2.view(np.uint32) & emu.TF32_DROP).any()
    assert np.all(np.abs((hi2 + lo2).astype(np.float64) - x) <= 2.0 ** -22 * np.abs(x))


def test_mma_accumulation_rounds_as_asked():
    # one mma of 8 tf32-exact products whose exact sum 1 + 2^-30 is not a float32: both give 1
    a = np.array([[1.0, 2.0 ** -15, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[1.0, 2.0 ** -15, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    zero = np.zeros(1, dtype=np.float32)
    assert emu.mma_dot(a, b, zero, "rn")[0] == 1.0 and emu.mma_dot(a, b, zero, "rz")[0] == 1.0
    # 1 + 3 * 2^-25 lies above the midpoint of [1, 1 + 2^-23]: to nearest rounds up, toward zero down
    a = np.array([[1.0, 2.0 ** -12, 2.0 ** -13, 0, 0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[1.0, 2.0 ** -12, 2.0 ** -12, 0, 0, 0, 0, 0]], dtype=np.float32)
    assert emu.mma_dot(a, b, zero, "rn")[0] == np.float32(1.0 + 2.0 ** -23)
    assert emu.mma_dot(a, b, zero, "rz")[0] == 1.0
    assert emu.mma_dot(-a, b, zero, "rn")[0] == -np.float32(1.0 + 2.0 ** -23)  # toward zero for either sign
    assert emu.mma_dot(-a, b, zero, "rz")[0] == -1.0


def test_three_products_recover_float32_accuracy_where_one_does_not():
    rng = np.random.default_rng(2)
    a, b = emu.operands(64, 200, rng)
    err = emu.errors(a, b)
    one_product = emu.mma_dot(a, b, np.zeros(200, dtype=np.float32), "rn")
    exact = (a.astype(np.float64) * b.astype(np.float64)).sum(-1)
    scale = np.abs(a.astype(np.float64) * b.astype(np.float64)).sum(-1) * 2.0 ** -24
    tf32_median = float(np.median(np.abs(one_product - exact) / scale))
    assert tf32_median > 500  # one TF32 product: ~2^-11 relative, thousands of float32 ulps
    assert err["tf32x3 rn-trunc, mma rn"]["median"] < 2 and err["ieee (fp32 FMA)"]["median"] < 2
