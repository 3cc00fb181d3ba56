"""A run store that checks itself: damaged chunk files (truncation, a flipped bit, a NaN written into W)
are named by load_run and retrained on resume; a directory whose spec.json is gone is refused, a deleted
manifest keeps the backend guard; a failure (no space, out of memory, device error) leaves the manifest
saying "failed" and why; sizes that cannot fit are refused before anything is written."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import superpos as sp
import superpos.driver as driver
import superpos.store as store_mod
from superpos.cli import main
from superpos.driver import run_sweep
from superpos.store import load_run
from superpos.sweep import parse_spec

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
SPEC = """
name = "integrity"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 40
batch_size = 32
log_every = 10
[sweep]
feature_probability = [1.0, 0.3]
seeds = 2
"""


def cli(spec, out, *extra):
    return subprocess.run([sys.executable, "-m", "superpos", "run", str(spec), "--out", str(out), "--backend", "torch",
                           "--chunk-size", "1", "--no-plot", *extra], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


def snapshot(out) -> dict:
    """Every result file's bytes (the timing-bearing json and manifest aside)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".safetensors", ".parquet") and "plots" not in p.parts}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def nan_into_w(path):
    tensors = load_file(str(path))
    tensors["W"][0, 0, 0] = float("nan")
    save_file(tensors, str(path), metadata={"chunk": "0"})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    spec = tmp / "spec.toml"
    spec.write_text(SPEC)
    out = tmp / "ref"
    p = cli(spec, out)
    assert p.returncode == 0, p.stderr
    return spec, out


def test_damaged_chunks_are_named_by_load_run_and_retrained_on_resume(finished, tmp_path):
    spec, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    original = snapshot(out)
    chunk = lambda i, suffix: out / "chunks" / f"c{i:06d}.{suffix}"  # noqa: E731
    damages = [(0, "safetensors", nan_into_w), (1, "safetensors", truncate), (2, "parquet", flip_bit)]
    for i, suffix, damage in damages:  # each alone is caught, naming the chunk, in one line
        damage(chunk(i, suffix))
        with pytest.raises(ValueError, match=rf"chunk {i} is damaged") as err:
            load_run(out)
        assert "\n" not in str(err.value) and chunk(i, suffix).name in str(err.value)
        chunk(i, suffix).write_bytes(original[f"chunks/{chunk(i, suffix).name}"])
    flip_bit(out / "models.parquet")
    with pytest.raises(ValueError, match="models.parquet does not match its checksum"):
        load_run(out)

    for i, suffix, damage in damages:
        damage(chunk(i, suffix))
    p = cli(spec, out)
    assert p.returncode == 0, p.stderr
    for i, _, _ in damages:
        assert f"chunk {i} is damaged" in p.stderr
    assert "chunk 3" not in p.stderr
    assert snapshot(out) == original  # retrained bit for bit, table rebuilt
    infos = [json.loads(chunk(i, "json").read_text()) for i in range(4)]
    assert [(x["start"], x["stop"]) for x in infos] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(set(x["sha256"]) == {"safetensors", "parquet"} for x in infos)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["runs"][-1]["chunks_trained"] == 3
    assert load_run(out).weights([0, 1, 2, 3])[0].isfinite().all()


def test_a_nan_behind_a_matching_checksum_is_still_caught(finished, tmp_path):
    """Checksums catch edits; a model marked ok with non-finite weights is caught when it is read."""
    _, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    path = out / "chunks" / "c000002.safetensors"
    nan_into_w(path)
    info_path = out / "chunks" / "c000002.json"
    info = json.loads(info_path.read_text())
    info["sha256"]["safetensors"] = store_mod.sha256(path.read_bytes())
    info_path.write_text(json.dumps(info))
    r = load_run(out)
    assert torch.isfinite(r.weights([0, 1])[0]).all()
    with pytest.raises(ValueError, match="chunk 2 is damaged.*non-finite"):
        r.weights([2])


def test_a_run_without_spec_json_is_refused_not_replanned(finished, tmp_path, capsys):
    spec, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "spec.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["run", str(spec), "--out", str(out), "--backend", "torch", "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no spec.json" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_creation_cut_short_before_spec_json_is_planned_again(tmp_path):
    """spec.json is written last when DIR is created: a kill just before it leaves a plan and no chunks,
    which is safe to plan again (nothing trained can be lost)."""
    out = tmp_path / "run"
    sweep = parse_spec(SPEC)
    store = store_mod.RunStore(out)
    out.mkdir()
    store.initialize(sweep, driver.make_plan(sweep, "torch", torch.device("cpu"), 3), {"backend": "torch"}, "torch")
    (out / "spec.json").unlink()
    assert run_sweep(sweep, out, backend="torch", quiet=True, chunk_size=1)["complete"]
    assert len(load_run(out).table) == 4


def test_chunks_that_do_not_match_the_plan_are_retrained(finished, tmp_path):
    spec, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    original = snapshot(out)
    # chunk 1's files swapped with chunk 2's: rows, weights and checksums agree, but not with the plan
    for suffix in ("safetensors", "json", "parquet"):
        a, b = out / "chunks" / f"c000001.{suffix}", out / "chunks" / f"c000002.{suffix}"
        a_bytes = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(a_bytes)
    with pytest.raises(ValueError, match="chunk 1 is damaged.*plan"):
        load_run(out)
    p = cli(spec, out)
    assert p.returncode == 0 and "chunk 1 is damaged" in p.stderr and "chunk 2 is damaged" in p.stderr
    assert snapshot(out) == original


def test_a_deleted_manifest_keeps_the_backend_guard(finished, tmp_path):
    spec, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "manifest.json").unlink()
    with pytest.raises(sp.store.RunError, match="started with backend 'torch'"):
        run_sweep(parse_spec(SPEC), out, backend="triton", quiet=True)
    assert not (out / "manifest.json").exists()
    run_sweep(parse_spec(SPEC), out, backend="torch", quiet=True)  # the same backend resumes
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def enospc_on_chunk_writes(monkeypatch):
    real = store_mod.atomic_write_bytes

    def write(path, data):
        if Path(path).suffix == ".safetensors" and "c000001" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", write)


def oom(pop, cfg, **kw):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def device_error(pop, cfg, **kw):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize("fault,error", [("enospc", "No space left on device"), ("oom", "OutOfMemoryError"),
                                         ("device", "illegal memory access")])
def test_a_failure_leaves_the_manifest_saying_failed_and_why(tmp_path, monkeypatch, fault, error):
    kw = {}
    if fault == "enospc":
        enospc_on_chunk_writes(monkeypatch)
    else:
        kw["train_fn"] = oom if fault == "oom" else device_error
    out = tmp_path / "run"
    with pytest.raises((OSError, RuntimeError)):
        run_sweep(parse_spec(SPEC), out, backend="torch", quiet=True, chunk_size=1, **kw)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["runs"][-1]["status"] == "failed" and error in manifest["runs"][-1]["error"]
    assert not (out / ".lock").exists()


def test_a_full_disk_mid_run(tmp_path):
    """A real full filesystem (a 64 KiB tmpfs, where this machine lets us mount one): the run fails with one
    line, the manifest says why, and a rerun on a roomier copy finishes bit-identically."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (the simulated ENOSPC test covers this)")
    try:
        spec = tmp_path / "spec.toml"
        spec.write_text(SPEC)
        p = cli(spec, mnt / "run", "--quiet")
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "No space left on device" in p.stderr
        manifest = json.loads((mnt / "run" / "manifest.json").read_text())
        assert manifest["status"] == "failed" and "No space left" in manifest["runs"][-1]["error"]
        shutil.copytree(mnt / "run", tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    ref = tmp_path / "ref"
    assert cli(spec, ref).returncode == 0
    p = cli(spec, tmp_path / "moved")
    assert p.returncode == 0, p.stderr
    assert snapshot(tmp_path / "moved") == snapshot(ref)


BOUNDS = {
    "n_features = 1000000000": ("n_features = 3", "model.n_features"),
    "steps = 2147483647": ("steps = 40", "train.steps"),
    "seeds = 1000000000000000": ("seeds = 2", "sweep"),
    "grid": ("feature_probability = [1.0, 0.3]",
             "feature_probability = { logspace = [0, -2, 1000] }\nimportance_decay = { linspace = [0.5, 1, 1000] }\n"
             "lr = { logspace = [-4, -2, 1000] }\nbase_seed = 0"),  # x 10**4 seeds below: 10**13 models
}


@pytest.mark.parametrize("case", ["n_features = 1000000000", "steps = 2147483647", "seeds = 1000000000000000", "grid"])
def test_sizes_that_cannot_fit_are_refused_before_anything_is_written(tmp_path, capsys, case):
    old, field = BOUNDS[case]
    text = SPEC.replace(old, case) if case != "grid" else SPEC.replace(old, field).replace("seeds = 2", "seeds = 10000")
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--backend", "torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("superpos: error: ")
    assert (field if case != "grid" else "sweep: the grid has") in err
    assert not out.exists()


def test_a_run_larger_than_the_free_disk_is_refused_up_front(tmp_path, monkeypatch):
    sweep = parse_spec(SPEC)
    need = driver.disk_bytes(sweep)
    # W, b, loss history (float32) and a table row per model, at the least
    assert need >= 4 * 4 * (6 + 3 + 4)
    monkeypatch.setattr(driver, "free_bytes", lambda path: need - 1)
    out = tmp_path / "deep" / "out"
    with pytest.raises(ValueError, match=r"needs about .* on disk, only .* is free"):
        run_sweep(sweep, out, backend="torch", quiet=True)
    assert not (tmp_path / "deep").exists()
    monkeypatch.setattr(driver, "free_bytes", lambda path: need)
    assert run_sweep(sweep, out, backend="torch", quiet=True)["complete"]
