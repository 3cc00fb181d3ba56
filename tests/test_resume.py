"""Nothing lost: a real `superpos run` interrupted (Ctrl-C) and killed (SIGKILL) mid-run, then rerun,
ends bit-identical to an uninterrupted run, having trained only the chunks that were missing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import superpos as sp

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
name = "resume"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 600
batch_size = 128
log_every = 50
[sweep]
feature_probability = [1.0, 0.5, 0.1, 0.05]
importance_decay = 0.8
seeds = 2
"""
# the same sweep with snapshots, an untied model with a privileged hidden layer and a correlated pair:
# the extra tensors each chunk stores must come out byte-identical too
SPEC_SNAPSHOTS = (SPEC.replace("n_hidden = 2\n", 'n_hidden = 2\ntied = false\nhidden_activation = "relu"\n')
                  .replace("log_every = 50\n", "log_every = 50\nsnapshots = 6\n")
                  .replace("seeds = 2\n", "seeds = 2\ncorrelated_sets = [[0, 2]]\n"))
N_CHUNKS = 8  # --chunk-size 1
# one thread per process: on a busy 2-core machine, oversubscribed OpenMP/numba threads make these
# tiny runs 10-100x slower (and the chunk timing erratic). Results do not depend on it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def command(spec, out):
    return [sys.executable, "-m", "superpos", "run", str(spec), "--out", str(out), "--backend", "torch",
            "--chunk-size", "1", "--quiet"]


def finished(out) -> int:
    d = out / "chunks"
    return len(list(d.glob("c*.parquet"))) if d.is_dir() else 0


def start_and_stop(spec, out, after: int, sig) -> subprocess.CompletedProcess:
    """Start a run, wait until `after` chunks are finished, send `sig`, return the finished process."""
    # SIGINT back to its default in the child: a suite started in the background (`cmd &` in a script) runs
    # with SIGINT ignored, which the child would inherit, and Python then never raises KeyboardInterrupt
    p = subprocess.Popen(command(spec, out), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while finished(out) < after and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, f"run ended before it could be stopped: {p.communicate()}"
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


@pytest.mark.parametrize("text", [SPEC, SPEC_SNAPSHOTS], ids=["plain", "snapshots"])
def test_interrupted_and_killed_run_resumes_bit_identical(tmp_path, text):
    spec = tmp_path / "resume.toml"
    spec.write_text(text)
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(command(spec, ref), cwd=ROOT, env=ENV, check=True, timeout=600)

    # Ctrl-C: the run stops cleanly (exit 130), keeps its finished chunks and releases the lock
    p = start_and_stop(spec, out, 1, signal.SIGINT)
    assert p.returncode == 130 and "rerun the same command to resume" in p.stderr
    assert not (out / ".lock").exists() and not (out / "models.parquet").exists()
    after_int = finished(out)
    assert 1 <= after_int < N_CHUNKS

    # kill -9: no clean-up at all; the stale lock file must not block the rerun
    p = start_and_stop(spec, out, after_int + 2, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    assert not (out / "models.parquet").exists()
    after_kill = finished(out)
    assert after_int + 2 <= after_kill < N_CHUNKS

    subprocess.run(command(spec, out), cwd=ROOT, env=ENV, check=True, timeout=600)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    last = manifest["runs"][-1]
    assert last["chunks_before"] == after_kill and last["chunks_trained"] == N_CHUNKS - after_kill
    assert [r["status"] for r in manifest["runs"]][-1] == "complete" and len(manifest["runs"]) == 3

    # bit-identical: the final table and every chunk's weights, losses and rows, byte for byte
    assert (out / "models.parquet").read_bytes() == (ref / "models.parquet").read_bytes()
    for i in range(N_CHUNKS):
        for suffix in ("safetensors", "parquet"):
            name = f"c{i:06d}.{suffix}"
            assert (out / "chunks" / name).read_bytes() == (ref / "chunks" / name).read_bytes(), name
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / ".lock").exists()
    if text is SPEC_SNAPSHOTS:
        snap = sp.load_run(out).snapshots(range(N_CHUNKS))
        assert snap["steps"].tolist()[0] == 0 and snap["W_dec"].shape[:2] == (N_CHUNKS, len(snap["steps"]))
