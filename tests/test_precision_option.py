"""A sweep's matmul precision (`superpos run --precision`, `run_sweep(precision=...)`): it reaches the
kernels (the same bits as `sp.train(..., input_precision=...)`), a run keeps the one it was started with,
bad values are one line, and the driver's memory estimate covers what the tiled launcher allocates."""
import json

import pytest
import torch

import superpos as sp
from superpos import driver
from superpos.cli import main
from superpos.driver import run_sweep
from superpos.store import RunError, load_run
from superpos.sweep import parse_spec

triton = pytest.importorskip("triton")

# n = 64, m = 16: the tiled kernel (tl.dot products, where the precision matters); 2 models, 2 steps
TEXT = """
name = "precision"
[model]
n_features = 64
n_hidden = 16
[train]
steps = 2
batch_size = 16
log_every = 1
[sweep]
feature_probability = 0.3
seeds = 2
"""


def test_the_command_line_names_the_kernels_precisions():
    from superpos.kernels.configs import PRECISIONS
    from superpos.train import PRECISIONS as NAMED
    assert tuple(PRECISIONS) == NAMED


def test_tf32_sweep_trains_the_tf32_kernel_and_keeps_its_precision(tmp_path):
    sweep = parse_spec(TEXT)
    assert sweep.groups[0].spec.n_features == 64
    out = tmp_path / "tf32"
    run_sweep(sweep, out, backend="triton", quiet=True, precision="tf32")
    run = load_run(out)
    ids = sorted(run.table["model_id"])
    W, b = run.weights(ids)
    direct = sp.train(sweep.population(0, sweep.n_models), sweep.groups[0].cfg, backend="triton",
                      input_precision="tf32")
    assert torch.equal(W, direct.W) and torch.equal(b, direct.b)  # the sweep trained the tf32 kernel
    ieee = sp.train(sweep.population(0, sweep.n_models), sweep.groups[0].cfg, backend="triton")
    assert not torch.equal(W, ieee.W)  # (the interpreter emulates TF32 mmas: tf32 is not ieee's bits)
    assert json.loads((out / "manifest.json").read_text())["precision"] == "tf32"
    assert json.loads((out / "plan.json").read_text())["precision"] == "tf32"
    chunk_info = json.loads(next((out / "chunks").glob("c*.json")).read_text())
    assert chunk_info["precision"] == "tf32" and chunk_info["backend"] == "triton"

    with pytest.raises(RunError, match="started with --precision tf32"):
        run_sweep(sweep, out, backend="triton", quiet=True)  # ieee, the default
    (out / "manifest.json").unlink()  # plan.json keeps the guard
    with pytest.raises(RunError, match="started with --precision tf32"):
        run_sweep(sweep, out, backend="triton", quiet=True, precision="tf32x3")
    summary = run_sweep(sweep, out, backend="triton", quiet=True, precision="tf32")  # its own: resumes
    assert summary["complete"] and summary["chunks_trained"] == 0


def test_an_ieee_run_is_as_before_the_option(tmp_path):
    sweep = parse_spec(TEXT.replace("n_features = 64", "n_features = 3").replace("n_hidden = 16", "n_hidden = 2"))
    out = tmp_path / "ieee"
    run_sweep(sweep, out, backend="triton", quiet=True)
    assert "precision" not in json.loads((out / "plan.json").read_text())  # the same bytes as before
    assert json.loads((out / "manifest.json").read_text())["precision"] == "ieee"
    with pytest.raises(RunError, match="started with --precision ieee"):
        run_sweep(sweep, out, backend="triton", quiet=True, precision="tf32")


def test_bad_precision_is_one_line(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(TEXT)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--backend", "torch", "--precision", "tf32"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superpos: error: precision 'tf32' applies to the triton")
    assert not out.exists()
    with pytest.raises(SystemExit) as stop:  # argparse: not one of the choices
        main(["run", str(spec), "--out", str(out), "--precision", "fp16"])
    assert stop.value.code == 2 and "ieee" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="precision must be one of ieee, tf32x3, tf32, got 'bf16'"):
        run_sweep(parse_spec(TEXT), out, backend="triton", precision="bf16")


def _launched_tensor_bytes(monkeypatch, pop, cfg, precision):
    """Bytes of the distinct tensors a tiled training holds on its device: the training state (both
    copies of the parameters, the moments) and every tensor the kernels are launched with (data tables,
    the launcher's scratch), recorded from the real launches under the interpreter."""
    from dataclasses import fields

    from superpos.kernels import train_tiled
    seen = {}

    def note(tensor):
        if isinstance(tensor, torch.Tensor):
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launch = self.kernel[grid]

            def call(*args, **kwargs):
                for a in list(args) + list(kwargs.values()):
                    note(a)
                return launch(*args, **kwargs)
            return call

    launcher = train_tiled.train_tiled

    def train_tiled_noting_state(state, *args, **kwargs):
        for f in fields(state):
            note(getattr(state, f.name))
        return launcher(state, *args, **kwargs)

    monkeypatch.setattr(train_tiled, "train_tiled", train_tiled_noting_state)
    for name in ("_tiled_grads_kernel", "_tiled_update_kernel"):
        monkeypatch.setattr(train_tiled, name, Recorder(getattr(train_tiled, name)))
    sp.train(pop, cfg, backend="triton", input_precision=precision, split=True)
    monkeypatch.undo()
    return sum(seen.values())


@pytest.mark.parametrize("precision, capability", [("ieee", None), ("tf32x3", None), ("tf32x3", (9, 0))])
def test_bytes_per_model_covers_what_a_tiled_training_holds(monkeypatch, precision, capability):
    from superpos.kernels.configs import choose_config, target_capability
    # 3 slices of 64 (the last partial), 4 models
    sweep = parse_spec(TEXT.replace("batch_size = 16", "batch_size = 150").replace("seeds = 2", "seeds = 4"))
    group, cfg = sweep.groups[0], sweep.groups[0].cfg
    kcfg = choose_config(64, 16, 150, precision, plain=True, capability=capability)
    assert kcfg.kind == "tiled" and kcfg.input_precision == precision
    if capability is not None and not kcfg.gz_kept:
        pytest.skip(f"no Hopper gz-kept blocks under Triton {triton.__version__}")
    with target_capability(capability):
        two, four = (_launched_tensor_bytes(monkeypatch, sweep.population(0, k), cfg, precision) for k in (2, 4))
    per_model = (four - two) / 2  # what is shared by all models (constants, gate and src tables) cancels
    estimate = driver.bytes_per_model(group, "triton", precision, capability)
    # the mirror (ieee) and gz's scratch beside x (Hopper tf32x3) are 5% and 40% of it here
    assert per_model <= estimate <= 1.02 * per_model, (per_model, estimate)
