"""The `superpos` command: run / plot / bench, and bad input -> one line on stderr, exit 2, DIR untouched."""
import subprocess
import sys
import types
from pathlib import Path

import pytest

import superpos as sp
from superpos.cli import main

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
name = "cli"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 20
batch_size = 16
log_every = 5
[sweep]
feature_probability = [1.0, 0.3]
seeds = 2
[quick]
train = { steps = 10 }
"""


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("superpos: error: "), err
    return lines[0]


BAD = {
    "unknown_key": (GOOD.replace("seeds = 2", "seeds = 2\nsparsity = 0.5"), "sweep.sparsity"),
    "wrong_type": (GOOD.replace("steps = 20", 'steps = "many"'), "train.steps"),
    "impossible_value": (GOOD.replace("[1.0, 0.3]", "[1.0, 1.3]"), "sweep.feature_probability[1]"),
    "bad_toml": (GOOD.replace("[model]", "[model"), "invalid TOML"),
}


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "impossible_value", "bad_toml"])
def test_bad_spec_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    text, key = BAD[case]
    out = tmp_path / "out"
    rc = main(["run", str(write(tmp_path, text)), "--out", str(out)])
    assert rc == 2
    assert key in one_error_line(capsys)
    assert not out.exists()


def test_missing_spec_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(out)]) == 2
    assert "not found" in one_error_line(capsys)
    assert not out.exists()


def test_bad_input_into_an_existing_run_dir_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--quiet", "--backend", "torch"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no bar, no summary
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    other = write(tmp_path, GOOD.replace("[1.0, 0.3]", "[1.0, 0.5]"), "other.toml")
    assert main(["run", str(other), "--out", str(out), "--backend", "torch"]) == 2
    assert "different spec" in one_error_line(capsys)
    assert main(["run", str(write(tmp_path, GOOD, "same.toml")), "--out", str(out), "--quick"]) == 2
    assert "different spec" in one_error_line(capsys)
    bad = write(tmp_path, BAD["unknown_key"][0], "bad.toml")
    assert main(["run", str(bad), "--out", str(out)]) == 2
    one_error_line(capsys)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_quick_needs_a_quick_table(tmp_path, capsys):
    spec = write(tmp_path, GOOD.split("[quick]")[0])
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--quick"]) == 2
    assert "quick" in one_error_line(capsys)


def test_run_shows_progress_and_summary(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--backend", "torch", "--quick"]) == 0
    err = capsys.readouterr().err
    assert "models" in err and "4 models in" in err and "4 ok, 0 diverged" in err
    r = sp.load_run(out)
    assert r.spec["quick"] is True and (r.table["steps"] == 10).all()


def test_python_dash_m_superpos_bad_input(tmp_path):
    spec = write(tmp_path, BAD["wrong_type"][0])
    p = subprocess.run([sys.executable, "-m", "superpos", "run", str(spec), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().startswith("superpos: error: train.steps") and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_intro_quick_runs_end_to_end(tmp_path, capsys):
    """The smallest experiment's --quick form, through the CLI (the other specs are checked in test_sweep)."""
    out = tmp_path / "intro"
    assert main(["run", str(ROOT / "experiments" / "intro.toml"), "--out", str(out), "--quick", "--quiet"]) == 0
    r = sp.load_run(out)
    assert r.name == "intro" and len(r.table) == 10 and (r.table["status"] == "ok").all()
    assert r.table["final_loss"].max() < 0.1


def test_plot_command(tmp_path, capsys):
    pytest.importorskip("superpos.plots")
    out = tmp_path / "o"
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--quiet", "--backend", "torch"]) == 0
    capsys.readouterr()
    assert main(["plot", str(out), "--format", "svg"]) == 0
    written = capsys.readouterr().out.split()
    assert written and all(Path(p).exists() and p.endswith(".svg") for p in written)
    assert all(Path(p).parent == out / "plots" for p in written)


def test_plot_of_a_missing_dir(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "not a superpos run directory" in one_error_line(capsys)


def test_bench_forwards_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("superpos.bench.cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "superpos.bench.cli", fake)
    assert main(["bench", "--quick", "--out", "x", "--help"]) == 0
    assert seen == [["--quick", "--out", "x", "--help"]]
