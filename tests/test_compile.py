"""Every kernel configuration the launcher picks compiles for sm_90 and sm_80 on this CPU-only machine,
and ptxas -v reports no spills (except the documented known gap in kernels/configs.py)."""
import pytest

pytest.importorskip("triton")
from superpos.kernels import compile_check  # noqa: E402
from superpos.kernels.configs import choose_config  # noqa: E402

# The shapes (n, m): small and tiled kernels, relu and linear.
SHAPES = [(3, 2, 1024), (5, 2, 1024), (37, 5, 1024), (400, 30, 1024)]


@pytest.fixture(scope="module")
def report():
    rows = compile_check.compile_report(SHAPES, archs=(90,), precisions=("ieee", "tf32"))
    rows += compile_check.compile_report(SHAPES, archs=(80,), precisions=("ieee",), activations=(True,))
    return rows


def test_every_config_compiles(report):
    for n, m, batch in SHAPES:
        for arch in ("sm_90", "sm_80"):
            kinds = {r["kernel"] for r in report if (r["n"], r["m"], r["arch"]) == (n, m, arch)}
            expected = "_train_small_kernel" if choose_config(n, m, batch).kind == "small" else "_train_tiled_kernel"
            assert expected in kinds and "_sample_batch_kernel" in kinds, (n, m, arch, kinds)


def test_no_register_spills(report):
    for r in report:
        assert r["registers"] > 0
        if not r["known_spill"]:
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
