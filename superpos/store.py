"""The results store: one directory per run, written chunk by chunk, atomically, resumable.

Layout of a run directory DIR
-----------------------------
    DIR/spec.json            the resolved spec (canonical JSON; see superpos.sweep) - what "same spec" means
    DIR/spec.toml            the spec file as given, for people
    DIR/plan.json            the chunks: (group, first model id, end model id), fixed when DIR is created
    DIR/manifest.json        versions, device, git commit, backend, matmul precision, one record per invocation,
                             timings, status
    DIR/chunks/cNNNNNN.safetensors   W (k,m,n) f32, b (k,n) f32, loss_history (k,L) f32, loss_steps (L,) i64,
                                     model_id (k,) i64 of chunk NNNNNN; untied models also W_dec
                                     (k,n,m), b_hidden (k,m); snapshots: snapshot_steps (S,) i64 and
                                     snapshot.<param> (k,S,...) (superpos.snapshots)
    DIR/chunks/cNNNNNN.json          where and how fast the chunk was trained (not part of the results),
                                     its model range and the sha256 of its safetensors and parquet files
    DIR/chunks/cNNNNNN.ckpt          the training state of an unfinished chunk (superpos.checkpoint),
                                     rewritten every few minutes, removed when the chunk is finished
    DIR/chunks/cNNNNNN.parquet       the chunk's rows of the per-model table; written last: a chunk is
                                     finished exactly when this file exists
    DIR/models.parquet       the per-model table, all chunks, sorted by model_id (written once all are done)
    DIR/.lock                held (flock) by the process that runs into DIR; the kernel releases it on kill -9

Integrity: resume and `load_run` check every finished chunk's files against the sha256 in its json; a
damaged chunk is retrained on resume and named by `load_run`. The table's sha256 is in the manifest.

Every file is written to a temporary name in the same directory, fsynced, then renamed over its final
name (os.replace), so a killed run never leaves a half-written file under a final name. Result files
(safetensors, parquet, spec, plan) hold no timestamps: an interrupted-and-resumed run writes the same bytes
as an uninterrupted one.

Columns of the per-model table: model_id, point_id, seed_index, seed, group, chunk; n_features, n_hidden,
activation; steps, batch_size, lr, beta1, beta2, eps, weight_decay, lr_schedule, warmup_steps, log_every;
feature_probability (the density; NaN for a per-feature vector that varies, then also
feature_probability_list), importance_decay (r of I_i = r**i; 1.0 for uniform importance 1; else NaN),
relative_importance (I of the last feature when the others are 1; else NaN), importance_list (explicit
per-feature importances only); final_loss (mean of the last 10 logged
losses, config.FINAL_LOSS_WINDOW), status ("ok" | "diverged"); and the columns of superpos.analysis.summary_metrics (dims_per_feature, frobenius_sq, n_represented, ...).

`load_run(DIR)` returns a `Run`: `.table` (pandas, one row per model), `.weights(ids)`, `.parameters(ids)`,
`.snapshots(ids)`, `.loss_history(ids)`,
`.name`, `.spec`, `.manifest`; `best_of_seeds(table)` keeps the lowest-loss ok model of every grid point.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from .sweep import Sweep, canonical_json

SPEC_FILE = "spec.json"
SOURCE_FILE = "spec.toml"
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
TABLE_FILE = "models.parquet"
LOCK_FILE = ".lock"
CHUNK_DIR = "chunks"
OWN_NAMES = {SPEC_FILE, SOURCE_FILE, PLAN_FILE, MANIFEST_FILE, TABLE_FILE, LOCK_FILE, CHUNK_DIR}


class RunError(ValueError):
    """A run that must not go ahead (DIR locked, DIR holds another spec, ...): the CLI prints it, exit 2."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# atomic files
# --------------------------------------------------------------------------------------------------
def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:  # a half-written temporary must not hold the space a full disk needs for the status
            tmp.unlink()
        except OSError:
            pass
        raise


def atomic_write_json(path, obj, canonical: bool = False) -> None:
    text = canonical_json(obj) if canonical else json.dumps(obj, indent=1, sort_keys=True, default=str)
    atomic_write_bytes(path, (text + "\n").encode())


def table_bytes(columns) -> bytes:
    """A parquet file (zstd) holding `columns` (dict of arrays / lists, or a pandas DataFrame)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(columns, dict):
        table = pa.table({k: (v if isinstance(v, list) else np.asarray(v)) for k, v in columns.items()})
    else:
        table = pa.Table.from_pandas(columns, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive, non-blocking lock on DIR/.lock (flock: released by the kernel if the holder dies)."""

    def __init__(self, directory):
        self.path = Path(directory) / LOCK_FILE
        self.fd = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: O_EXCL, stale locks need deleting by hand
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
            except FileExistsError:
                raise RunError(f"{self.path.parent}: locked by another run (delete {self.path} if none is running)") from None
            os.write(self.fd, self._holder().encode())
            return self
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                finally:
                    os.close(fd)
                raise RunError(f"{self.path.parent}: another run is writing into this directory ({holder}); "
                               "wait for it to finish or use another --out") from None
            try:  # the file we locked may have been unlinked by a finishing holder: lock the live one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, self._holder().encode())
        self.fd = fd
        return self

    @staticmethod
    def _holder() -> str:
        return f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}"

    @staticmethod
    def parse_holder(text: str) -> tuple | None:
        """(pid, host) of a lock file's text as _holder writes it; None for any other text."""
        words = text.split()
        if len(words) >= 4 and words[0] == "pid" and words[1].isdigit() and words[2] == "on":
            return int(words[1]), words[3]
        return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------------------------------
# environment facts for the manifest
# --------------------------------------------------------------------------------------------------
def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("superpos", "torch", "numpy", "pandas", "pyarrow", "safetensors", "triton", "numba"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_info(device) -> dict:
    import torch

    device = torch.device(device)
    info = {"type": device.type, "host": socket.gethostname(), "platform": platform.platform()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_bytes=int(props.total_memory), cuda=torch.version.cuda)
    else:
        info.update(name=_cpu_name(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads())
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> dict | None:
    """The commit of the source tree superpos is imported from (None when it is not a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------------
# the run directory
# --------------------------------------------------------------------------------------------------
class RunStore:
    """Reading and writing one run directory (see the module docstring for the layout)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.chunk_dir = self.dir / CHUNK_DIR
        self._width = 6

    # -- checks before anything is written -------------------------------------------------------
    def check(self, sweep: Sweep, backend: str, precision: str = "ieee") -> bool:
        """Refuse (RunError) a DIR that is not ours or holds another spec, backend or matmul precision.
        True when DIR is a run."""
        d = self.dir
        if d.exists() and not d.is_dir():
            raise RunError(f"{d}: exists and is not a directory")
        if not d.exists():
            return False
        spec_path = d / SPEC_FILE
        if not spec_path.exists():
            foreign = sorted(p.name for p in d.iterdir() if p.name not in OWN_NAMES and not p.name.startswith("."))
            if foreign:
                raise RunError(f"{d}: exists and is not a superpos run directory (holds {foreign[0]!r}); "
                               "choose an empty or new --out")
            if self.has_chunk_files():  # a plan.json alone is a creation cut short: safe to plan again
                raise RunError(f"{d}: holds chunks but no {SPEC_FILE} (the directory is damaged); restore "
                               f"{SPEC_FILE} or use another --out")
            return False
        old = json.loads(spec_path.read_text())
        new = json.loads(sweep.to_json())
        if old != new:
            raise RunError(f"{d}: holds a run of a different spec ({_first_difference(old, new)}); "
                           "use another --out, or the same spec file and flags (--quick) to resume")
        started = self.started_backend()
        if started not in (None, backend):
            raise RunError(f"{d}: was started with backend {started!r}; resume it with "
                           f"--backend {started} (results of different backends are not bit-identical)")
        started = self.started_precision()
        if started != precision:
            raise RunError(f"{d}: was started with --precision {started}; resume it with --precision {started} "
                           "(results of different matmul precisions are not bit-identical)")
        return True

    def started_precision(self) -> str:
        """The matmul precision DIR's kernels were started with: the manifest's, else plan.json's, else
        "ieee" (the only one before the option, and what plan.json leaves out)."""
        precision = self.read_manifest().get("precision")
        if precision is None and (self.dir / PLAN_FILE).exists():
            precision = json.loads((self.dir / PLAN_FILE).read_text()).get("precision")
        return precision or "ieee"

    def started_backend(self) -> str | None:
        """The backend DIR was started with: the manifest's, else plan.json's, else a finished chunk's."""
        backend = self.read_manifest().get("backend")
        if backend is None and (self.dir / PLAN_FILE).exists():
            backend = json.loads((self.dir / PLAN_FILE).read_text()).get("backend")
        if backend is None and self.chunk_dir.is_dir():
            for p in sorted(self.chunk_dir.glob("c*.json")):
                try:
                    backend = json.loads(p.read_text()).get("backend")
                except (OSError, ValueError):
                    continue
                if backend is not None:
                    break
        return backend

    def has_chunk_files(self) -> bool:
        return self.chunk_dir.is_dir() and any(p.name.startswith("c") for p in self.chunk_dir.iterdir())

    # -- creation ---------------------------------------------------------------------------------
    def initialize(self, sweep: Sweep, plan: np.ndarray, manifest: dict, backend: str | None = None,
                   precision: str = "ieee") -> None:
        """Create DIR's fixed files (spec, plan, manifest) unless they are there. Caller holds the lock.

        The backend, and a precision other than "ieee", are also kept in plan.json, so that a deleted
        manifest does not drop their guards (an "ieee" run's plan.json is as before the option).
        """
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        self.clean_temporaries()
        if (self.dir / SPEC_FILE).exists():
            return
        if sweep.source_text is not None:
            atomic_write_bytes(self.dir / SOURCE_FILE, sweep.source_text.encode())
        plan_json = {"chunks": plan.tolist(), **({"backend": backend} if backend is not None else {}),
                     **({"precision": precision} if precision != "ieee" else {})}
        atomic_write_json(self.dir / PLAN_FILE, plan_json, canonical=True)
        atomic_write_json(self.dir / MANIFEST_FILE, manifest)
        atomic_write_bytes(self.dir / SPEC_FILE, (sweep.to_json() + "\n").encode())  # last: DIR is a run

    def clean_temporaries(self) -> None:
        for folder in (self.dir, self.chunk_dir):
            if folder.is_dir():
                for p in folder.glob(".*.tmp-*"):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass

    def lock(self) -> RunLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        return RunLock(self.dir)

    # -- reading ----------------------------------------------------------------------------------
    def read_spec(self) -> dict:
        return json.loads((self.dir / SPEC_FILE).read_text())

    def read_plan(self) -> np.ndarray:
        chunks = json.loads((self.dir / PLAN_FILE).read_text())["chunks"]
        return np.asarray(chunks, dtype=np.int64).reshape(-1, 3)

    def read_manifest(self) -> dict:
        p = self.dir / MANIFEST_FILE
        return json.loads(p.read_text()) if p.exists() else {}

    def write_manifest(self, manifest: dict, in_place_if_full: bool = False) -> None:
        """Atomically; on a full disk (`in_place_if_full`) by overwriting the old file, whose space is
        freed first, so that a run's final status still gets recorded."""
        try:
            atomic_write_json(self.dir / MANIFEST_FILE, manifest)
        except OSError as err:
            if not (in_place_if_full and err.errno == errno.ENOSPC):
                raise
            text = json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n"
            with open(self.dir / MANIFEST_FILE, "r+b") as f:
                f.truncate(0)
                f.write(text.encode())
                f.flush()
                os.fsync(f.fileno())

    # -- chunks -----------------------------------------------------------------------------------
    def chunk_path(self, i: int, suffix: str) -> Path:
        return self.chunk_dir / f"c{i:0{self._width}d}.{suffix}"

    def chunk_done(self, i: int) -> bool:
        return self.chunk_path(i, "parquet").exists()

    def done_chunks(self, n_chunks: int) -> set:
        if not self.chunk_dir.is_dir():
            return set()
        names = {p.name for p in self.chunk_dir.iterdir()}
        return {i for i in range(n_chunks) if self.chunk_path(i, "parquet").name in names}

    def write_chunk(self, i: int, tensors: dict, rows, info: dict) -> None:
        """Tensors (safetensors), then info with both files' sha256 (json), then rows (parquet, the
        completion mark); then the chunk's checkpoint, no longer needed, is removed."""
        from safetensors.torch import save

        tensors = {k: v.contiguous() for k, v in tensors.items()}
        weights, table = save(tensors, metadata={"chunk": str(i)}), table_bytes(rows)
        info = {**info, "sha256": {"safetensors": sha256(weights), "parquet": sha256(table)}}
        atomic_write_bytes(self.chunk_path(i, "safetensors"), weights)
        atomic_write_json(self.chunk_path(i, "json"), info)
        atomic_write_bytes(self.chunk_path(i, "parquet"), table)
        self.remove_checkpoint(i)

    def chunk_problem(self, i: int, start: int, stop: int) -> str | None:
        """Why finished chunk i (models [start, stop)) cannot be trusted, or None when its files check out.

        Chunks written before checksums were recorded are trusted when their files are there.
        """
        try:
            info = json.loads(self.chunk_path(i, "json").read_text())
        except FileNotFoundError:
            return f"{self.chunk_path(i, 'json').name} is missing"
        except ValueError:
            return f"{self.chunk_path(i, 'json').name} is not valid JSON"
        if "start" in info and (info["start"], info["stop"]) != (start, stop):
            return f"holds models [{info['start']}, {info['stop']}) but the plan says [{start}, {stop})"
        for suffix, expected in (info.get("sha256") or {}).items():
            path = self.chunk_path(i, suffix)
            try:
                actual = sha256(path.read_bytes())
            except FileNotFoundError:
                return f"{path.name} is missing"
            if actual != expected:
                return f"{path.name} does not match its checksum (damaged or edited)"
        if not self.chunk_path(i, "safetensors").exists():
            return f"{self.chunk_path(i, 'safetensors').name} is missing"
        return None

    def discard_chunk(self, i: int) -> None:
        """Forget chunk i (its completion mark first), so that it is trained again."""
        for suffix in ("parquet", "json", "safetensors"):
            try:
                self.chunk_path(i, suffix).unlink()
            except FileNotFoundError:
                pass

    def discard_table(self) -> None:
        try:
            (self.dir / TABLE_FILE).unlink()
        except FileNotFoundError:
            pass

    def read_chunk_tensors(self, i: int) -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.chunk_path(i, "safetensors")))

    # -- checkpoints of unfinished chunks ---------------------------------------------------------
    def write_checkpoint(self, i: int, ckpt, start: int, stop: int) -> None:
        from safetensors.torch import save

        meta = {"chunk": str(i), "start": str(start), "stop": str(stop), "step": str(ckpt.step),
                "sha256": _tensors_sha256(ckpt.to_tensors())}
        atomic_write_bytes(self.chunk_path(i, "ckpt"), save(ckpt.to_tensors(), metadata=meta))

    def read_checkpoint(self, i: int, start: int, stop: int):
        """The saved TrainCheckpoint of chunk i, or None (none saved, or not of these models: removed)."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        from .checkpoint import TrainCheckpoint

        path = self.chunk_path(i, "ckpt")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            meta = _safetensors_metadata(data)
            if (int(meta["start"]), int(meta["stop"])) != (start, stop):
                raise ValueError("other models")
            tensors = load(data)
            if _tensors_sha256(tensors) != meta["sha256"]:
                raise ValueError("checksum")
            return TrainCheckpoint.from_tensors(int(meta["step"]), tensors)
        except (SafetensorError, ValueError, KeyError):
            self.remove_checkpoint(i)
            return None

    def checkpoint_step(self, i: int) -> int:
        """The step chunk i's checkpoint was saved at (0 when there is none or it is unreadable)."""
        try:
            with open(self.chunk_path(i, "ckpt"), "rb") as f:
                head = f.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else 0
                return int(_safetensors_metadata(head + f.read(min(size, 1 << 20)))["step"])
        except (OSError, ValueError, KeyError):
            return 0

    def remove_checkpoint(self, i: int) -> None:
        try:
            self.chunk_path(i, "ckpt").unlink()
        except FileNotFoundError:
            pass

    def chunk_infos(self, n_chunks: int) -> list:
        out = []
        for i in range(n_chunks):
            p = self.chunk_path(i, "json")
            if p.exists():
                out.append(json.loads(p.read_text()))
        return out

    def assemble(self, n_chunks: int) -> str:
        """Write models.parquet from every chunk's rows (sorted by model_id); returns its sha256."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = [pq.read_table(self.chunk_path(i, "parquet")) for i in range(n_chunks)]
        table = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
        if table.num_rows:
            table = table.sort_by("model_id")
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        atomic_write_bytes(self.dir / TABLE_FILE, buf.getvalue())
        return sha256(buf.getvalue())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensors_sha256(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _safetensors_metadata(data: bytes) -> dict:
    """The __metadata__ of a safetensors file's bytes (its header: 8-byte length, then JSON)."""
    if len(data) < 8:
        raise ValueError("not a safetensors file")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("truncated safetensors header")
    return json.loads(data[8:8 + size]).get("__metadata__", {})


def _first_difference(old, new, path="") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        first = ("name", "quick", "model", "train", "sweep")  # the most telling differences first
        for k in sorted(set(old) | set(new), key=lambda k: (first.index(k) if k in first else len(first), k)):
            if k not in old:
                return f"{path + k}: not in the stored spec"
            if k not in new:
                return f"{path + k}: only in the stored spec"
            if old[k] != new[k]:
                return _first_difference(old[k], new[k], f"{path}{k}.")
    s = path.rstrip(".")
    short = lambda v: (json.dumps(v)[:60] + "...") if len(json.dumps(v)) > 60 else json.dumps(v)  # noqa: E731
    return f"{s}: stored {short(old)}, given {short(new)}"


# --------------------------------------------------------------------------------------------------
# reading a run back
# --------------------------------------------------------------------------------------------------
class Run:
    """A run directory, read back. `table` has one row per model (see superpos.sweep for the columns)."""

    def __init__(self, directory):
        self.store = RunStore(directory)
        self.dir = self.store.dir
        if not (self.dir / SPEC_FILE).exists():
            raise ValueError(f"{self.dir}: not a superpos run directory (no {SPEC_FILE})")
        self.spec = self.store.read_spec()
        self.manifest = self.store.read_manifest()
        self.name = self.spec["name"]
        self.sweep = Sweep(self.spec)
        self.plan = self.store.read_plan()
        self._starts = self.plan[:, 1]
        self.complete = (self.dir / TABLE_FILE).exists()
        self._verify()
        self.table = self._read_table()
        self._cache = {}

    def __repr__(self):
        return f"Run({self.name!r}, {len(self.table)}/{self.sweep.n_models} models, dir={str(self.dir)!r})"

    def _verify(self):
        """ValueError naming the first finished chunk (or table) whose files fail their checksums."""
        for i in sorted(self.store.done_chunks(len(self.plan))):
            _, start, stop = (int(x) for x in self.plan[i])
            problem = self.store.chunk_problem(i, start, stop)
            if problem:
                raise ValueError(f"{self.dir}: chunk {i} is damaged ({problem}); rerun `superpos run` on this "
                                 "directory to train it again")
        expected = self.manifest.get("table_sha256")
        if self.complete and expected and sha256((self.dir / TABLE_FILE).read_bytes()) != expected:
            raise ValueError(f"{self.dir}: {TABLE_FILE} does not match its checksum (damaged or edited); rerun "
                             "`superpos run` on this directory to rebuild it")

    def _read_table(self):
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.complete:
            return pq.read_table(self.dir / TABLE_FILE).to_pandas()
        done = sorted(self.store.done_chunks(len(self.plan)))
        warnings.warn(f"{self.dir}: run incomplete ({len(done)} of {len(self.plan)} chunks); "
                      "the table holds the finished chunks", stacklevel=3)
        if not done:
            return pd.DataFrame({"model_id": pd.Series([], dtype="int64")})
        t = pa.concat_tables([pq.read_table(self.store.chunk_path(i, "parquet")) for i in done],
                             promote_options="default")
        return t.sort_by("model_id").to_pandas()

    def _locate(self, model_ids):
        given = np.asarray(model_ids).reshape(-1)
        if given.size and not (np.issubdtype(given.dtype, np.integer) and given.dtype != np.bool_):
            raise ValueError(f"model_ids must be integers, got {model_ids!r}")
        ids = given.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.sweep.n_models):
            raise ValueError(f"model_ids must be in [0, {self.sweep.n_models})")
        chunk = np.searchsorted(self._starts, ids, side="right") - 1
        return ids, chunk, ids - self._starts[chunk]

    def _chunk(self, i):
        if i not in self._cache:
            if not self.store.chunk_done(i):
                raise ValueError(f"{self.dir}: chunk {i} is not finished (resume the run first)")
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = self._checked_finite(i, self.store.read_chunk_tensors(i))
        return self._cache[i]

    def _checked_finite(self, i, tensors):
        """A model stored with status "ok" has finite weights (a second line of defence after the checksum)."""
        import torch

        rows = self.table[self.table["model_id"].between(int(self.plan[i, 1]), int(self.plan[i, 2]) - 1)]
        ok = torch.tensor((rows["status"] == "ok").to_numpy() if "status" in rows else [], dtype=torch.bool)
        if ok.numel() == len(tensors["W"]):
            finite = torch.isfinite(tensors["W"]).flatten(1).all(1) & torch.isfinite(tensors["b"]).all(1)
            if not finite[ok].all():
                raise ValueError(f"{self.dir}: chunk {i} is damaged (a model marked ok has non-finite weights); "
                                 "rerun `superpos run` on this directory to train it again")
        return tensors

    def _gather(self, model_ids, key):
        import torch

        ids, chunk, offset = self._locate(model_ids)
        if not ids.size:
            return ids, None
        out = None
        for c in np.unique(chunk):
            sel = np.flatnonzero(chunk == c)
            part = self._chunk(int(c))[key]
            if out is None:
                out = torch.empty((len(ids),) + tuple(part.shape[1:]), dtype=part.dtype)
            elif tuple(part.shape[1:]) != tuple(out.shape[1:]):
                raise ValueError(f"these models have different {key} shapes {tuple(out.shape[1:])} and "
                                 f"{tuple(part.shape[1:])}; ask one shape at a time")
            out[torch.from_numpy(sel)] = part[torch.from_numpy(offset[sel])]
        return ids, out

    def weights(self, model_ids):
        """(W (k, m, n), b (k, n)) float32 torch tensors of the given models, in the given order."""
        _, W = self._gather(model_ids, "W")
        _, b = self._gather(model_ids, "b")
        return W, b

    def parameters(self, model_ids) -> dict:
        """Every stored parameter of the given models: W, b, and for untied models W_dec (k,n,m), b_hidden (k,m)."""
        ids, chunk, _ = self._locate(model_ids)
        if not ids.size:
            return {}
        names = [k for k in ("W", "b", "W_dec", "b_hidden") if k in self._chunk(int(chunk[0]))]
        return {k: self._gather(ids, k)[1] for k in names}

    def snapshots(self, model_ids) -> dict:
        """{"steps": (S,), "W": (k, S, m, n), "b": (k, S, n), ...}: the parameters at the snapshot steps."""
        from .snapshots import read_snapshots
        return read_snapshots(self, model_ids)

    def loss_history(self, model_ids):
        """(steps (L,) int64 numpy, losses (k, L) float32 numpy) of the given models."""
        ids, chunk, _ = self._locate(model_ids)
        steps = {tuple(self._chunk(int(c))["loss_steps"].tolist()) for c in np.unique(chunk)}
        if len(steps) > 1:
            raise ValueError("these models logged their loss at different steps; ask one training config at a time")
        _, losses = self._gather(ids, "loss_history")
        if losses is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return np.asarray(steps.pop(), dtype=np.int64), losses.numpy()

    def importance(self, model_ids) -> np.ndarray:
        """(k, n) importances the models were trained with."""
        return self.sweep.importance(model_ids)

    def feature_probability(self, model_ids) -> np.ndarray:
        """(k, n) feature probabilities the models were trained with."""
        return self.sweep.feature_probability(model_ids)


def load_run(directory) -> Run:
    """Read a run directory back (a finished run, or the finished chunks of an interrupted one)."""
    return Run(directory)


def best_of_seeds(table):
    """Per grid point (point_id), the row of the lowest final_loss among models with status "ok".

    Points whose models all diverged are left out. Returns a DataFrame sorted by point_id.
    """
    ok = table[table["status"] == "ok"]
    idx = ok.groupby("point_id")["final_loss"].idxmin()
    return ok.loc[idx.to_numpy()].sort_values("point_id").reset_index(drop=True)


def drop_worst(table, k: int = 1):
    """Per grid point, every model but the k of highest final_loss (diverged models count as worst)."""
    loss = table["final_loss"].where(table["status"] == "ok", np.inf)
    rank = loss.groupby(table["point_id"]).rank(method="first", ascending=False)
    return table[rank > k].sort_values("model_id").reset_index(drop=True)
