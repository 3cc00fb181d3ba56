"""`superpos plot DIR --models IDS`: the per-model figures draw the chosen models; bad ids are one line,
exit code 2, and nothing written."""
from superpos.cli import main

SPEC = """
name = "tiny"
[model]
n_features = 4
n_hidden = 2
[train]
steps = 30
batch_size = 32
[sweep]
feature_probability = [1.0, 0.3, 0.1]
seeds = 2
"""


def test_plot_models_option(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run), "--quiet", "--backend", "torch", "--no-plot"]) == 0
    out = tmp_path / "plots"
    assert main(["plot", str(run), "--out", str(out), "--models", "0,3-4"]) == 0
    assert {"intro.png", "feature_vectors.png"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    for bad, message in (("0,9", "models: model 9 is not in the run"), ("x", "--models: 'x' is not a model id")):
        target = tmp_path / f"bad{len(message)}"
        assert main(["plot", str(run), "--out", str(target), "--models", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not target.exists()
