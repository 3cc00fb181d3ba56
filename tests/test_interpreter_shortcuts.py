"""superpos.interpreter_shortcuts: under the interpreter, a launch patches triton.language once, its
@triton.jit helper calls do not patch it again, the results are the same, and the language is Triton's
own again after the launch; numpy dtypes come from one table, as Triton's function gives them."""
import os

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter only")


@triton.jit
def _twice_plus(x, c):
    return 2.0 * x + c


@triton.jit
def _chain_kernel(x_ptr, out_ptr, CALLS: tl.constexpr):
    offs = tl.arange(0, 16)
    x = tl.load(x_ptr + offs)
    for i in tl.static_range(CALLS):
        x = _twice_plus(x, i * 1.0)
    tl.store(out_ptr + offs, x)


def _launch_counting_patches(monkeypatch, calls):
    """(output, number of _patch_builtin calls) of one launch making `calls` helper calls per program."""
    from triton.runtime import interpreter
    count = [0]
    plain = interpreter._patch_builtin

    def counting(*args, **kwargs):
        count[0] += 1
        return plain(*args, **kwargs)
    monkeypatch.setattr(interpreter, "_patch_builtin", counting)
    x = torch.arange(16, dtype=torch.float32)
    out = torch.empty_like(x)
    _chain_kernel[(3,)](x, out, CALLS=calls)
    monkeypatch.setattr(interpreter, "_patch_builtin", plain)
    return out.numpy(), count[0]


def test_helpers_do_not_patch_the_language_again(monkeypatch):
    from superpos.interpreter_shortcuts import install
    assert install()  # installed by conftest; idempotent
    expected = np.arange(16, dtype=np.float32)
    for i in range(5):
        expected = 2 * expected + i
    out5, patches5 = _launch_counting_patches(monkeypatch, 5)
    out0, patches0 = _launch_counting_patches(monkeypatch, 0)
    assert np.array_equal(out5, expected) and np.array_equal(out0, np.arange(16, dtype=np.float32))
    # 3 programs x 5 helper calls, yet only the launch's own patches (Triton's code: 5 more each call)
    assert patches5 == patches0 > 0
    # and the next launch patches again: the skip ends with the launch
    assert _launch_counting_patches(monkeypatch, 5)[1] == patches0


def test_the_language_is_tritons_own_after_a_launch(monkeypatch):
    _launch_counting_patches(monkeypatch, 2)
    assert tl.core.is_builtin(tl.load) and tl.core.is_builtin(tl.math.exp)
    assert tl.core.is_builtin(tl.tensor.__add__)


def test_numpy_dtypes_are_tritons():
    from triton.runtime import interpreter
    get = interpreter._get_np_dtype
    assert getattr(get, "superpos_shortcut", False)
    # Triton's own function, called without the shortcut: its closure's `original`
    original = dict(zip(get.__code__.co_freevars, (c.cell_contents for c in get.__closure__)))["original"]
    assert not getattr(original, "superpos_shortcut", False)
    types = [tl.int1, tl.float16, tl.bfloat16, tl.float32, tl.float64, tl.int8, tl.uint8, tl.int16, tl.uint16,
             tl.int32, tl.uint32, tl.int64, tl.uint64, tl.float8e5, tl.float8e4nv]
    types += [tl.pointer_type(tl.float32), tl.block_type(tl.float32, [4, 8]), tl.block_type(tl.uint32, [16]),
              tl.block_type(tl.pointer_type(tl.int64), [2])]
    for t in types:
        assert get(t) == original(t) and get(t).type is original(t).type, t
    with pytest.raises(KeyError):
        get(tl.void)  # what Triton's function does with a type it has no numpy type for
    with pytest.raises(KeyError):
        original(tl.void)


def test_tuple_types_are_tritons():
    core = tl.core
    assert getattr(core.tuple, "superpos_shortcut", False)
    x = tl.tensor(None, tl.block_type(tl.float32, [4, 8]))
    inner = core.tuple([x, 3])
    cases = [([x, 3, 2.5], None), ([inner, tl.int32, x], None), ([x, 1], core.tuple_type([x.type, core.constexpr_type(1)])),
             ([x, 1], [x.type, core.constexpr_type(1)]), ([], None)]
    for values, given in cases:
        lazy = core.tuple(values, given)
        eager = object.__new__(core.tuple)
        core.tuple.superpos_original_init(eager, values, given)  # Triton's constructor: its type at once
        assert str(lazy.type) == str(eager.type) and lazy.type == eager.type
    named = core.tuple([x, 7], core.tuple_type([x.type, core.constexpr_type(7)], ["a", "b"]))
    assert named.a is x and named.b == 7  # tl.tuple's field access goes through its type
    named._setitem(1, 9)  # what Triton's code mutates a tuple by: the type follows the values
    assert named.b == 9 and str(named.type) == str(core.tuple_type([x.type, core.constexpr_type(9)], ["a", "b"]))


def test_the_triton_backend_on_the_cpu_installs_them():
    """A user's TRITON_INTERPRET=1 run (no test conftest): sp.train(backend="triton") passes float arguments
    as float32, as a GPU launch does, and takes the shortcuts."""
    import subprocess
    import sys
    code = """
import superpos as sp
from triton.runtime import interpreter
before = (getattr(interpreter._implicit_cvt, "float32_scalars", False), getattr(interpreter._patch_lang, "superpos_shortcut", False))
pop = sp.Population(sp.ModelSpec(2, 1), feature_probability=0.5, importance=1.0, seed=[0])
sp.train(pop, sp.TrainConfig(steps=1, batch_size=8), backend="triton")
after = (interpreter._implicit_cvt.float32_scalars, interpreter._patch_lang.superpos_shortcut,
         interpreter._get_np_dtype.superpos_shortcut)
print(before, after)
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(False, False) (True, True, True)"
