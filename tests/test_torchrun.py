"""`torchrun --nproc_per_node=2 -m superpos run ...` (gloo, CPU) shards the chunks over two ranks and
writes exactly what one process writes."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))

SPEC = """
name = "shards"
[model]
n_features = 4
n_hidden = 2
[train]
steps = 60
batch_size = 64
log_every = 20
[sweep]
feature_probability = [1.0, 0.3, 0.1]
relative_importance = [0.5, 2.0]
seeds = 2
"""

# one thread per process (torchrun's own default for its workers): on a busy 2-core machine,
# oversubscribed OpenMP/numba threads make these tiny runs 10-100x slower. Results do not depend on it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


# snapshots and an untied |x| model on anticorrelated symmetric data: the extra tensors must shard too
SPEC_SNAPSHOTS = (SPEC.replace("n_hidden = 2\n", 'n_hidden = 2\ntied = false\nhidden_activation = "relu"\n'
                                                   'target = "abs"\nvalue_range = "symmetric"\n')
                  .replace("log_every = 20\n", "log_every = 20\nsnapshot_steps = [0, 10, 59]\n")
                  .replace("seeds = 2\n", "seeds = 2\nanticorrelated_sets = [[1, 3]]\n")
                  .replace("[1.0, 0.3, 0.1]", "[0.5, 0.3, 0.1]"))  # the pair's densities sum to <= 1


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
@pytest.mark.parametrize("text", [SPEC, SPEC_SNAPSHOTS], ids=["plain", "snapshots"])
def test_two_ranks_match_one_process(tmp_path, text):
    spec = tmp_path / "shards.toml"
    spec.write_text(text)
    args = ["run", str(spec), "--backend", "torch", "--chunk-size", "2", "--quiet"]  # 12 models, 6 chunks
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "superpos", *args, "--out", str(one)], cwd=ROOT, env=ENV,
                   check=True, timeout=600)
    p = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "superpos", *args, "--out", str(two)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]

    ranks = [json.loads((two / "chunks" / f"c{i:06d}.json").read_text())["rank"] for i in range(6)]
    assert ranks == [0, 1, 0, 1, 0, 1]  # chunk i goes to rank i % world_size
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["runs"][-1]["world_size"] == 2
    assert (two / "models.parquet").read_bytes() == (one / "models.parquet").read_bytes()
    for i in range(6):
        for suffix in ("safetensors", "parquet"):
            name = f"c{i:06d}.{suffix}"
            assert (two / "chunks" / name).read_bytes() == (one / "chunks" / name).read_bytes(), name
    assert not (two / ".lock").exists()

    # a second torchrun into the finished DIR resumes to nothing; a different spec is refused on every rank
    p = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "superpos", *args, "--out", str(two)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    if text is SPEC_SNAPSHOTS:
        from safetensors.torch import load_file
        assert "snapshot.W_dec" in load_file(str(two / "chunks" / "c000005.safetensors"))
    spec.write_text(text.replace("seeds = 2", "seeds = 3"))
    p = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "superpos", *args, "--out", str(two)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and "different spec" in p.stderr
