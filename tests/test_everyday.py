"""The researcher's everyday use: a whole spec from Python (`sp.run_spec`, `parse_spec` of a path, TOML
text or a dict), the README's library example from any directory, an honest progress bar, one line for
skipped figures, `bench --quick` beside superpos's own CPU path and out of tracked files, and every
remaining bad input as one line."""
import io
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import tqdm

import superpos as sp
from superpos.bench.cli import main as bench_main
from superpos.bench.harness import default_backends
from superpos.cli import main
from superpos.driver import run_sweep
from superpos.sweep import parse_spec

ROOT = Path(__file__).resolve().parent.parent
TEXT = """
name = "everyday"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 30
batch_size = 16
log_every = 10
[sweep]
feature_probability = [1.0, 0.2]
seeds = 2
"""
AS_DICT = {"name": "everyday", "model": {"n_features": 3, "n_hidden": 2},
           "train": {"steps": 30, "batch_size": 16, "log_every": 10},
           "sweep": {"feature_probability": [1.0, 0.2], "seeds": 2}}


# --- item 1: a whole spec from Python -----------------------------------------------------------------
def test_parse_spec_takes_a_path_toml_text_or_a_dict(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(TEXT)
    sweeps = [parse_spec(TEXT), parse_spec(AS_DICT), parse_spec(path), parse_spec(str(path))]
    assert {s.to_json() for s in sweeps} == {sweeps[0].to_json()} and sweeps[0].n_models == 4
    assert AS_DICT["sweep"]["seeds"] == 2  # the caller's dict is left as it was
    with pytest.raises(FileNotFoundError):
        parse_spec(str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="spec must be"):
        parse_spec(3.5)
    with pytest.raises(ValueError, match="model.n_features"):
        parse_spec({**AS_DICT, "model": {"n_features": "five", "n_hidden": 2}})


def test_run_spec_trains_resumes_and_draws_like_the_cli(tmp_path, capsys):
    out = tmp_path / "lib"
    run = sp.run_spec(AS_DICT, out, backend="torch")
    assert run.complete and len(run.table) == 4 and (run.table["status"] == "ok").all()
    assert (out / "plots" / "loss_curves.png").exists()
    err = capsys.readouterr().err
    assert "4 models in" in err and len([ln for ln in err.splitlines() if "skipped" in ln]) == 1
    cli_out = tmp_path / "cli"
    spec = tmp_path / "s.toml"
    spec.write_text(TEXT)
    assert main(["run", str(spec), "--out", str(cli_out), "--backend", "torch", "--quiet"]) == 0
    assert (out / "models.parquet").read_bytes() == (cli_out / "models.parquet").read_bytes()
    again = sp.run_spec(TEXT, out, backend="torch", quiet=True)  # TOML text of the same spec: resumes
    assert again.manifest["runs"][-1]["chunks_trained"] == 0
    with pytest.raises(ValueError, match="different spec"):
        sp.run_spec({**AS_DICT, "train": {"steps": 31, "batch_size": 16, "log_every": 10}}, out, backend="torch")


def test_readme_library_example_runs_from_any_directory(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Library\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "run_spec" in block and "progress=True" in block
    fast = block.replace("10_000", "20").replace('backend="auto"', 'backend="torch"')
    fast = fast.replace('"runs/intro_lib")', '"runs/intro_lib", backend="torch")')
    p = subprocess.run([sys.executable, "-c", fast], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "runs" / "intro_lib" / "models.parquet").exists()


# --- items 1 and 3: progress ----------------------------------------------------------------------------
class Recorder(tqdm.tqdm):
    """tqdm that records (n, total, text) at every update."""
    seen = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Recorder.seen.append((self.n, self.total, self.format_dict.get("models", "")))

    def update(self, n=1):
        out = super().update(n)
        Recorder.seen.append((self.n, self.total, self.format_dict.get("models", "")))
        return out


def test_run_progress_counts_whole_models_with_a_work_weighted_eta(tmp_path, monkeypatch):
    """Two groups: 4 cheap models (10 steps) then 4 dear ones (300 steps). After the cheap half of the
    models the bar must say ~3% of the work, not 50% (the ETA follows the work), and never overshoot."""
    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    Recorder.seen = []
    sweep = parse_spec(TEXT.replace("steps = 30\n", "") + "steps = [10, 300]\n")  # [sweep] is last
    assert sweep.n_groups == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TqdmWarning (n > total) would fail here
        run_sweep(sweep, tmp_path / "r", backend="torch", chunk_size=4)
    seen = Recorder.seen
    assert seen and all(0 <= n <= total for n, total, _ in seen)
    assert seen[-1][0] == seen[-1][1] and seen[-1][2] == "8/8 models"
    first_group_done = next(n / total for n, total, text in seen if text.startswith("4/8"))
    assert first_group_done == pytest.approx(4 * 10 / (4 * 10 + 4 * 300), rel=0.02)
    assert all(re.fullmatch(r"\d/8 models", text) for _, _, text in seen)


def test_resumed_bar_starts_at_the_work_already_done(tmp_path, monkeypatch):
    sweep = parse_spec(TEXT)
    out = tmp_path / "r"

    def stop_after_first(pop, cfg, **kw):
        if int(pop.seed[0]) >= 2:
            raise KeyboardInterrupt
        return sp.train(pop, cfg, **kw)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, backend="torch", chunk_size=2, quiet=True, train_fn=stop_after_first)
    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    Recorder.seen = []
    run_sweep(sweep, out, backend="torch")
    assert Recorder.seen[0] == (Recorder.seen[0][1] // 2, Recorder.seen[0][1], "2/4 models")
    assert Recorder.seen[-1][2] == "4/4 models"


# --- item 4: the quiet default --------------------------------------------------------------------------
def test_skipped_figures_are_one_line_and_verbose_says_why(tmp_path, capsys):
    out = tmp_path / "r"
    spec = tmp_path / "s.toml"
    spec.write_text(TEXT.replace("[1.0, 0.2]", "0.2"))  # one density: only the loss curves and intro apply
    assert main(["run", str(spec), "--out", str(out), "--backend", "torch", "--quiet", "--no-plot"]) == 0
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--verbose" in err[0]
    n = int(re.search(r"skipped (\d+) figures", err[0]).group(1))
    assert n >= 3
    assert main(["plot", str(out), "--verbose"]) == 0
    verbose = capsys.readouterr().err.strip().splitlines()
    assert len(verbose) == n and all(re.match(r"superpos: skipped \w+: .+", line) for line in verbose)


# --- item 5: bench --quick ------------------------------------------------------------------------------
def test_bench_quick_times_superpos_and_writes_no_tracked_file(tmp_path, monkeypatch):
    assert "reference" in default_backends("cpu", quick=True)
    assert "reference" not in default_backends("cpu", quick=False)
    tracked = {p: p.read_bytes() for p in (ROOT / "bench" / "results").glob("*.jsonl")}
    monkeypatch.chdir(tmp_path)
    rc = bench_main(["--quick", "--workload", "intro", "--backend", "torch,reference", "--steps", "2",
                     "--models", "2", "--repeats", "1", "--warmup", "0", "--no-measure-peak"])
    assert rc == 0
    assert {p: p.read_bytes() for p in (ROOT / "bench" / "results").glob("*.jsonl")} == tracked
    written = tmp_path / "runs" / "bench" / "cpu-quick.jsonl"
    rows = [__import__("json").loads(line) for line in written.read_text().splitlines()]
    assert {r["backend"] for r in rows} == {"torch", "reference"} and all(r["status"] == "ok" for r in rows)


# --- item 10: every remaining traceback becomes one line ---------------------------------------------
def one_line(capsys, prefix="superpos: error: "):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix), err
    return err[0]


@pytest.mark.parametrize("device", ["foo", "meta", "cuda:x"])
def test_bad_device_is_one_line(tmp_path, capsys, device):
    spec = tmp_path / "s.toml"
    spec.write_text(TEXT)
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--backend", "torch", "--device", device]) == 2
    assert "device must be cpu, cuda or cuda:N" in one_line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,words", [
    (["--report", "missing.jsonl"], "missing.jsonl"),
    (["--quick", "--workload", ","], "comma-separated"),
    (["--quick", "--backend", " , "], "comma-separated"),
    (["--quick", "--time-budget", "nan"], "--time-budget"),
    (["--quick", "--time-budget", "inf"], "--time-budget"),
])
def test_bench_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert bench_main(argv) == 2
    assert words in one_line(capsys, "superpos bench: error: ")
    assert not (tmp_path / "runs").exists()


def test_non_utf8_spec_names_the_file(tmp_path, capsys):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes(TEXT.replace('"everyday"', '"caf\xe9"').encode("latin-1"))
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys)
    assert "latin1.toml" in line and "UTF-8" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize("old,new,field", [
    ("seeds = 2", "seeds = 2\nimportance = 1e39", "sweep.importance"),
    ("seeds = 2", "seeds = 2\nrelative_importance = [1, 1e39]", "sweep.relative_importance[1]"),
    ("n_features = 3", "n_features = 3.0", "model.n_features"),
    ("steps = 30", "steps = 30.0", "train.steps"),
])
def test_spec_refuses_what_the_library_refuses(old, new, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        parse_spec(TEXT.replace(old, new))


SPEC = sp.ModelSpec(3, 2)


@pytest.mark.parametrize("kwargs,words", [
    (dict(importance=1e39), "importance"),
    (dict(feature_probability=[]), "feature_probability must not be empty"),
    (dict(importance=[]), "importance must not be empty"),
    (dict(seed=[]), "seed must not be empty"),
    (dict(feature_probability="0.5"), "feature_probability must be a number"),
    (dict(importance=[True, False, True]), "importance must be a number"),
])
def test_population_refuses(kwargs, words):
    with pytest.raises(ValueError, match=words):
        sp.Population(SPEC, **kwargs)


def test_importance_at_the_float32_limit_is_kept_finite():
    pop = sp.Population(SPEC, importance=3e38)
    assert torch.isfinite(pop.importance).all()


def test_run_weights_refuses_non_integer_ids(tmp_path):
    run = sp.run_spec(TEXT, tmp_path / "r", backend="torch", quiet=True, plot=False)
    with pytest.raises(ValueError, match="model_ids must be integers"):
        run.weights([0.7])
    with pytest.raises(ValueError, match="model_ids must be integers"):
        run.loss_history([True])
    assert torch.equal(run.weights(np.array([1, 0]))[0], run.weights([1, 0])[0])


def test_open_ended_intervals_say_inf_is_excluded():
    with pytest.raises(ValueError, match=re.escape("lr must be a finite number")):
        sp.TrainConfig(lr=math.inf)
    with pytest.raises(ValueError, match=re.escape("lr must be in [0, inf), got -1.0")):
        sp.TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match=re.escape("eps must be in (0, inf), got 0.0")):
        sp.TrainConfig(eps=0.0)


def test_checkpoint_every_is_checked(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(TEXT)
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error, as for --chunk-size
        main(["run", str(spec), "--out", str(tmp_path / "o"), "--checkpoint-every", "nan"])
    assert exit_.value.code == 2 and "--checkpoint-every" in capsys.readouterr().err
    with pytest.raises(ValueError, match="checkpoint_every"):
        run_sweep(parse_spec(TEXT), tmp_path / "o", checkpoint_every=-1)
    assert not (tmp_path / "o").exists()


def test_chunk_records_the_backend_that_trained_it(tmp_path, monkeypatch):
    """Under "auto" on a GPU, a group the kernels cannot train falls back to torch: its chunk record says
    "torch", not the "triton" that "auto" resolved to (here "auto" is made to resolve to "triton" on the
    CPU, the interpreter standing in for the GPU)."""
    import superpos.driver as driver
    train_mod = sys.modules["superpos.train"]  # (the package's `train` attribute is the function)

    monkeypatch.setattr(driver, "resolve_backend", lambda b: "triton")
    monkeypatch.setattr(train_mod, "resolve_backend", lambda b: "triton")
    # both kernels take every option today: withdraw untied models from the tiled kernel's declaration
    # (n=40, m=20 is a tiled shape), as the next option a kernel lacks would be
    from superpos import triton_backend
    monkeypatch.setitem(triton_backend.KERNEL_SUPPORTS, "tiled", triton_backend.KERNEL_SUPPORTS["tiled"] - {"tied"})
    spec = parse_spec({"name": "fallback", "model": {"n_features": 40, "n_hidden": 20, "tied": False},
                       "train": {"steps": 4, "batch_size": 8, "log_every": 2},
                       "sweep": {"feature_probability": [0.1], "seeds": 2}})
    run_sweep(spec, tmp_path / "run", backend="auto", quiet=True, device="cpu")
    infos = driver.RunStore(tmp_path / "run").chunk_infos(1)
    assert [info["backend"] for info in infos] == ["torch"]


def test_bars_redraw_rarely_where_stderr_is_a_file(monkeypatch, tmp_path):
    """Under nohup or a batch scheduler every redraw is a line's worth of log: one per 30 s, not 2 a second."""
    from superpos.train import bar_interval

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bar_interval() == 0.5
    with open(tmp_path / "log", "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert bar_interval() == 30.0
