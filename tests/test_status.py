"""`superpos status DIR` (superpos.status): how far a run got, whether a process trains it, the time
left; read from the directory alone. Each state is made for real: a finished run, a run interrupted
after its checkpoint, a failed run, and the lock of a live, a dead and a remote holder."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import superpos as sp
from superpos.cli import main
from superpos.driver import run_sweep
from superpos.status import format_status, run_status
from superpos.store import LOCK_FILE
from superpos.sweep import parse_spec

# two chunks of 2 models (chunk_size=2), 60 steps each
TEXT = """
name = "status"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 60
batch_size = 16
log_every = 10
[sweep]
feature_probability = [1.0, 0.3]
seeds = 2
"""


def _stop_in_chunk_1_at(step, error=KeyboardInterrupt):
    """A train_fn that trains the first chunk through and stops the second after its checkpoint at `step`."""
    calls = []

    def train_fn(pop, cfg, checkpoint=None, **kw):
        calls.append(len(pop))
        if len(calls) == 1:
            return sp.train(pop, cfg, checkpoint=checkpoint, **kw)

        def ckpt(at, snap):
            checkpoint(at, snap)
            if at == step:
                raise error("planted stop")
        return sp.train(pop, cfg, checkpoint=ckpt, **kw)
    return train_fn


def _interrupted_at_30(tmp_path):
    """(sweep, run dir) of a run stopped in its second chunk after the checkpoint at step 30."""
    sweep = parse_spec(TEXT)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, backend="torch", quiet=True, chunk_size=2, checkpoint_every=0,
                  train_fn=_stop_in_chunk_1_at(30))
    return sweep, out


def test_a_finished_run(tmp_path, capsys):
    sweep = parse_spec(TEXT)
    out = tmp_path / "run"
    run_sweep(sweep, out, backend="torch", quiet=True, chunk_size=2)
    st = run_status(out)
    assert (st["chunks"], st["chunks_done"], st["models"], st["models_done"]) == (2, 2, 4, 4)
    assert st["work_done"] == 1.0 and st["in_progress"] == [] and st["state"] == {"state": "complete"}
    assert st["backend"] == "torch" and st["seconds_left"] is None and st["train_seconds"] > 0
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "status, 4 models in 2 chunks (torch" in text and "done: 2 of 2 chunks, 4 of 4 models, 100%" in text
    assert "state: complete" in text
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models_done"] == 4


def test_an_interrupted_run_with_a_checkpoint(tmp_path):
    sweep, out = _interrupted_at_30(tmp_path)
    st = run_status(out)
    assert (st["chunks_done"], st["models_done"]) == (1, 2)
    assert st["in_progress"] == [{"chunk": 1, "models": 2, "step": 30, "steps": 60}]
    assert st["state"]["state"] == "incomplete"
    # the work of a model-step is the same in both chunks here: 2 x 60 + 2 x 30 of 4 x 60 model-steps
    assert st["work_done"] == pytest.approx(180 / 240)
    chunk0 = json.loads((out / "chunks" / "c000000.json").read_text())
    # to finish, 2 x 30 model-steps at chunk 0's pace (2 x 60 in its train_seconds)
    assert st["seconds_left"] == pytest.approx(chunk0["train_seconds"] * 60 / 120)
    text = format_status(st)
    assert "in progress: chunk 1 (2 models) checkpointed at step 30 of 60" in text
    assert "state: incomplete; rerun `superpos run` to resume" in text and "to finish: about" in text
    run_sweep(sweep, out, backend="torch", quiet=True)  # resumes; then complete
    assert run_status(out)["state"] == {"state": "complete"}


def test_a_failed_run_says_why(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        run_sweep(parse_spec(TEXT), out, backend="torch", quiet=True, chunk_size=2, checkpoint_every=0,
                  train_fn=_stop_in_chunk_1_at(20, RuntimeError))
    st = run_status(out)
    assert st["state"]["state"] == "failed" and "planted stop" in st["state"]["error"]
    assert "error: RuntimeError: planted stop" in format_status(st)


def test_the_lock_holder_live_dead_or_remote(tmp_path):
    _, out = _interrupted_at_30(tmp_path)
    host = socket.gethostname()
    lock = out / LOCK_FILE
    lock.write_text(f"pid {os.getpid()} on {host} since 2026-11-27T00:00:00+00:00")  # this process: alive
    st = run_status(out)
    assert st["state"]["state"] == "running" and st["state"]["alive"] is True
    assert f"state: running: pid {os.getpid()} on {host}" in format_status(st) and "(alive)" in format_status(st)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process (until the system reuses it)
    lock.write_text(f"pid {dead.pid} on {host} since 2026-11-27T00:00:00+00:00")
    assert run_status(out)["state"]["state"] == "incomplete"  # killed holder: what the manifest says
    lock.write_text("pid 1 on another-host-of-the-cluster since 2026-11-27T00:00:00+00:00")
    st = run_status(out)
    assert st["state"] == {"state": "running", "holder": lock.read_text(), "alive": None}
    assert "(on another host: not checked)" in format_status(st)
    # there, the directory's last write says whether it still works: ten minutes ago
    past = time.time() - 600
    for p in [*out.iterdir(), *(out / "chunks").iterdir()]:
        if p.is_file():
            os.utime(p, (past, past))
    st = run_status(out)
    assert 600 <= st["seconds_since_last_write"] < 660
    assert "last write to the directory: 10 min " in format_status(st)


def test_not_a_run_directory_is_one_line(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"superpos: error: {tmp_path}: not a superpos run directory (no spec.json)"
