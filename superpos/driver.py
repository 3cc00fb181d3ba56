"""The sweep driver: a Sweep -> chunks -> trained, stored models. `superpos run` calls `run_sweep`.

- Checkpoints: while a chunk trains, its state (superpos.checkpoint) is saved atomically every
  `checkpoint_every` seconds (default CHECKPOINT_SECONDS); a rerun continues the chunk from it, bit for
  bit, so a kill loses at most that much work. The checkpoint is removed once the chunk is finished.
- Integrity: finished chunks whose files fail their checksums are retrained on resume (one line each).
- Chunking: each group (one shape and TrainConfig) is cut into chunks that fit a memory budget
  (`chunk_budget`), and on the CPU also a work budget so that a chunk takes minutes, not hours (a kill
  loses at most one chunk). The plan is fixed when DIR is created and reused on resume.
- Resume: chunks whose rows are on disk are skipped. Since every model's result depends only on its seed
  and config, the resumed run's results are bit-identical to an uninterrupted one (same backend/device).
- Divergence: models whose loss or weights stop being finite are stored with status "diverged".
- Out of memory: a chunk that raises an OOM is split in two and each half retried (recursively).
- Side by side: on a GPU, chunks that each keep only a few SMs busy (e.g. the double descent's one
  group of 3 models per dataset size) train several at once, each in its own thread and CUDA stream
  (superpos.side_by_side; `superpos run --side-by-side N` sets the count). Same results, bit for bit.
- Several processes: under torchrun (WORLD_SIZE > 1) torch.distributed is initialised (nccl on CUDA,
  gloo otherwise); rank r trains the unfinished chunks i with i % world_size == r, all ranks write into
  the shared DIR, and rank 0 writes the final table after a barrier. The results equal a one-process run
  bit for bit (same backend and device type). A rerun may use another world size: it resumes.

    # one node, 8 GPUs
    torchrun --standalone --nproc_per_node=8 -m superpos run experiments/phase_n2m1.toml --out runs/phase
    # two nodes (run on each; DIR on a filesystem both see)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=NODE0:29500 --rdzv_id=phase \
        -m superpos run experiments/phase_n2m1.toml --out /shared/runs/phase
    # SLURM (sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8): one torchrun per node
    srun torchrun --nnodes=$SLURM_NNODES --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1):29500 --rdzv_id=$SLURM_JOB_ID \
        -m superpos run experiments/phase_n2m1.toml --out /shared/runs/phase
"""
from __future__ import annotations

import datetime
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .config import final_loss
from .snapshots import chunk_extras, concat_extras
from . import side_by_side
from .store import RunError, RunStore, device_info, git_commit, now_iso, versions
from .spec import require_int
from .sweep import Group, Sweep, plan_chunks
from .train import PRECISIONS, bar_interval, resolve_backend, train

CPU_MEMORY_BUDGET = 512 * 2**20  # bytes of training temporaries per CPU chunk
GPU_MEMORY_FRACTION = 0.5  # of the free device memory when the plan is made
MAX_CHUNK_MODELS = 1 << 20
# CPU work budget per chunk, in element-steps (models x steps x batch x (n + m)). The torch path runs
# about 3e7 of them a second on the 2-core dev machine (n=2, m=1: ~1e4 model-steps/s at batch 1024), so
# this is ~5 minutes of work there.
CPU_WORK_BUDGET = 1e10
CHECKPOINT_SECONDS = 180.0  # a kill loses at most about this much of a chunk's training
# Disk bytes of one model's table row, twice (chunk file and models.parquet): the 1M-row table is
# < 200 MB (tests/test_store.py::test_million_row_table_size), so 200 B is on the safe side.
TABLE_BYTES_PER_MODEL = 2 * 200


# --------------------------------------------------------------------------------------------------
# chunk sizing
# --------------------------------------------------------------------------------------------------
def bytes_per_model(group: Group, backend: str, precision: str = "ieee", capability=None) -> int:
    """Device memory one model of `group` needs while it trains (an estimate, on the safe side), with the
    kernels' blocks for a GPU of this compute capability (None: the generic blocks)."""
    n, m = group.spec.n_features, group.spec.n_hidden
    B, cfg = group.cfg.batch_size, group.cfg
    state = 4 * 4 * (m * n + n)  # W, b, and two AdamW moments, float32
    history = 4 * len(cfg.logged_steps())
    if not group.spec.tied:
        state += 4 * 4 * (m * n + m)  # W_dec, b_hidden and their moments
    from .triton_backend import unsupported_option
    if backend == "triton" and unsupported_option(group.spec, group.data) is None:
        # batches live in registers; only state, history, the data tables (the seed and, per feature,
        # threshold, scale, importance, set bounds lo and off: triton_backend.make_data) and the tiled
        # kernel's scratch touch memory
        from .kernels.configs import choose_config
        from .kernels.train_tiled import scratch_shapes
        from .triton_backend import family_config
        fixed = state + history + 8 + 4 * 5 * n + 64
        kcfg = choose_config(n, m, B, precision, **family_config(group.spec, group.data), capability=capability)
        if kcfg.kind == "small":
            return fixed
        shapes = scratch_shapes(kcfg, n, m, B, split=True, tied=group.spec.tied)  # split: the larger scratch
        return fixed + 4 * sum(math.prod(s) for s in shapes.values())
    # torch path (also where "auto" falls back from triton): the batch and ~10 same-size temporaries
    # (x, z, y, diff, gz, RNG words...) plus h, gh
    return state + history + 4 * B * (12 * n + 4 * m)


def chunk_budget(group: Group, backend: str, device: torch.device, precision: str = "ieee") -> int:
    """The most models of `group` one chunk should hold on `device`."""
    if device.type == "cuda":
        from .triton_backend import launch_capability
        per = bytes_per_model(group, backend, precision, launch_capability(device))
        free, _ = torch.cuda.mem_get_info(device)
        cap = int(GPU_MEMORY_FRACTION * free) // per
    else:
        per = bytes_per_model(group, backend, precision)
        cap = CPU_MEMORY_BUDGET // per
        work = group.cfg.steps * model_cost(group)
        cap = min(cap, int(CPU_WORK_BUDGET // work))
    return int(max(1, min(cap, MAX_CHUNK_MODELS)))


def disk_bytes(sweep: Sweep) -> int:
    """Bytes a finished run of `sweep` takes on disk (an estimate, on the safe side)."""
    total = 0
    for grp in sweep.groups:
        n, m = grp.spec.n_features, grp.spec.n_hidden
        per_model = 4 * (m * n + n + len(grp.cfg.logged_steps())) + 8 + TABLE_BYTES_PER_MODEL
        total += grp.n_models * per_model
    return total


def free_bytes(path) -> int:
    """Free bytes on the filesystem that holds `path` (or would hold it: its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(sweep: Sweep, out) -> None:
    need, free = disk_bytes(sweep), free_bytes(out)
    if need > free:
        raise ValueError(f"{out}: the run needs about {_size(need)} on disk, only {_size(free)} is free")


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024


def make_plan(sweep: Sweep, backend: str, device: torch.device, chunk_size: int | None = None,
              precision: str = "ieee") -> np.ndarray:
    if chunk_size is not None:
        return plan_chunks(sweep, lambda g: chunk_size)
    return plan_chunks(sweep, lambda g: chunk_budget(g, backend, device, precision))


# --------------------------------------------------------------------------------------------------
# training one chunk
# --------------------------------------------------------------------------------------------------
def _is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def train_splitting(pop, cfg, backend, device, progress=None, train_fn=train, resume=None, checkpoint=None,
                    _depth=0, **kernel_options):
    """`train`, but a population that runs out of memory is split in two and each half retried.

    `progress(model_steps)` receives the model-steps done since its last call (whole numbers; a failed
    attempt's are taken back). `resume`/`checkpoint` as in `train`; after a split, the halves start from
    their part of `resume` and offer no checkpoints (a checkpoint is of the whole population).
    Returns (W, b, loss_history, loss_steps, status, n_splits, extra, trained_by): extra holds the other
    tensors a chunk stores (untied parameters, snapshots; superpos.snapshots.chunk_extras); trained_by is
    the backend that really trained it (under "auto", "torch" where a group has no kernel).
    """
    K = len(pop)
    first = resume.step if resume is not None else 0
    last = [K * first]

    def report(steps_done):
        if progress is not None:
            progress(K * steps_done - last[0])
            last[0] = K * steps_done

    try:
        res = train_fn(pop, cfg, backend=backend, device=device, progress=report, resume=resume,
                       checkpoint=checkpoint, **kernel_options)
        return (res.W, res.b, res.loss_history, np.asarray(res.loss_steps), list(res.status), 0,
                chunk_extras(res), res.backend)
    except Exception as err:  # noqa: BLE001 - only OOM is handled, everything else re-raised
        if not _is_oom(err) or K == 1:
            raise
    if progress is not None and last[0] > K * first:
        progress(K * first - last[0])  # the failed attempt's progress is taken back
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    half = K // 2
    print(f"superpos: out of memory with {K} models; splitting into {half} + {K - half}", file=sys.stderr)
    parts = [train_splitting(pop.select(sl), cfg, backend, device, progress, train_fn,
                             resume.select(sl) if resume is not None else None, None, _depth + 1, **kernel_options)
             for sl in (slice(0, half), slice(half, K))]
    a, b = parts
    return (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), torch.cat([a[2], b[2]]), a[3],
            a[4] + b[4], 1 + a[5] + b[5], concat_extras(a[6], b[6]), a[7])


_WARNED = set()


def _warn_once(key, msg):
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"superpos: warning: {msg}", file=sys.stderr)


def summary_metrics(W: torch.Tensor) -> dict:
    """superpos.analysis.summary_metrics(W) as (K,) columns, or {} (with a warning) without analysis."""
    try:
        from . import analysis
        fn = analysis.summary_metrics
    except (ImportError, AttributeError):
        _warn_once("analysis", "superpos.analysis.summary_metrics is not available; the table has no metric columns")
        return {}
    return {k: np.asarray(v).reshape(-1) for k, v in fn(W).items()}


def chunk_rows(sweep: Sweep, chunk: int, start: int, stop: int, loss_history, status, W) -> dict:
    rows = sweep.rows(start, stop)
    rows["chunk"] = np.full(stop - start, chunk, dtype=np.int32)
    rows["final_loss"] = final_loss(loss_history).double().numpy()
    rows["status"] = np.array(status, dtype=object)
    for k, v in summary_metrics(W).items():
        rows[k] = v
    return rows


# --------------------------------------------------------------------------------------------------
# torch.distributed
# --------------------------------------------------------------------------------------------------
class Dist:
    """Rank / world size, and the few collectives the driver needs (no-ops in a single process)."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = False

    def init(self, device_type: str):
        if self.world_size > 1 and not self.active:
            import torch.distributed as dist

            backend = "nccl" if device_type == "cuda" else "gloo"
            hours = float(os.environ.get("SUPERPOS_DIST_TIMEOUT_HOURS", "24"))
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=hours))
            self.active = True
        return self

    def broadcast(self, obj):
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.active = False


def pick_device(backend: str, device, dist: Dist) -> torch.device:
    if device is not None:
        dev = parse_device(device)
    elif backend == "triton" or (backend == "torch" and torch.cuda.is_available()):
        dev = torch.device("cuda", dist.local_rank % max(1, torch.cuda.device_count())) \
            if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device("cpu")
    if backend == "triton" and dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("backend: 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to interpret on the CPU)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {dev} asked for but CUDA is not available")
        torch.cuda.set_device(dev)
    return dev


def parse_device(device) -> torch.device:
    """A torch device the driver can train on (cpu or cuda[:N]), or a ValueError naming the field."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return dev


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------
def _preload():
    import pandas  # noqa: F401 - pyarrow converts object columns through it
    import pyarrow.parquet  # noqa: F401
    import safetensors.torch  # noqa: F401
    try:
        from . import analysis  # noqa: F401
    except ImportError:
        pass


def trained_chunks(store, todo) -> int:
    return sum(store.chunk_done(i) for i in todo)


class _Progress:
    """The run's bar: counts whole models, and estimates the time left from work done, not models done
    (steps x batch x (n + m) per model, the cost CPU_WORK_BUDGET counts), so that groups of different
    cost give an honest ETA. `start(chunk, ...)` opens a chunk and returns the callable its training
    reports model-steps to; `finish(chunk)` closes it. Chunks trained side by side share the bar (a lock)."""

    def __init__(self, total_work: int, done_work: int, total_models: int, done_models: int, quiet, desc):
        self.bar = None
        self.total_models, self.models = total_models, done_models
        self.open = {}  # chunk -> [models, steps, cost, model-steps done]
        self.lock = threading.Lock()
        if quiet:
            return
        from tqdm import tqdm

        class Bar(tqdm):
            models_text = f"{done_models}/{total_models} models"

            @property
            def format_dict(self):
                return {**super().format_dict, "models": self.models_text}

        self.bar = Bar(total=total_work, initial=done_work, file=sys.stderr, desc=desc, dynamic_ncols=True,
                       smoothing=0.1, mininterval=bar_interval(),
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {models} [{elapsed}<{remaining}]")
        self._show()

    def start(self, chunk, models: int, steps: int, cost: int, model_steps_done: int = 0):
        """Chunk `chunk` of `models`, each `steps` steps of `cost` work units; `model_steps_done` already
        done. Returns its progress callable (model-steps since the last call)."""
        with self.lock:
            self.open[chunk] = [models, steps, cost, model_steps_done]
        return lambda model_steps: self._advance(chunk, model_steps)

    def finish(self, chunk):
        with self.lock:
            self.models += self.open.pop(chunk)[0]
            self._show()

    def _advance(self, chunk, model_steps: int):
        with self.lock:
            c = self.open[chunk]
            c[3] += model_steps
            if self.bar is not None and model_steps:
                self._show(refresh=False)
                self.bar.update(model_steps * c[2])

    def _show(self, refresh=True):
        if self.bar is not None:
            done = self.models + sum(ms // steps for _, steps, _, ms in self.open.values())
            self.bar.models_text = f"{done}/{self.total_models} models"
            if refresh:
                self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def model_cost(group: Group) -> int:
    """Work of one model-step of `group` in the bar's units (the batch a step really draws: a finite
    dataset smaller than the batch is the whole batch)."""
    return group.data.batch_size(group.cfg.batch_size) * (group.spec.n_features + group.spec.n_hidden)


def run_sweep(sweep: Sweep, out, backend: str = "auto", quiet: bool = False, chunk_size: int | None = None,
              device=None, argv=None, train_fn=train, checkpoint_every: float = CHECKPOINT_SECONDS,
              side_by_side_count: int | None = None, precision: str = "ieee") -> dict:
    """Train every unfinished chunk of `sweep` into run directory `out`; returns a summary dict.

    precision: the fused kernels' matmul precision (triton backend): "ieee" (float32 FMA products), "tf32x3"
    (tensor-core products, float32-accurate) or "tf32" (tensor cores, approximate); a run keeps its own.

    checkpoint_every: seconds between checkpoints of a training chunk (0: at every chance; inf: never).
    side_by_side_count: chunks trained at once (threads; on a GPU each its own stream); None: as many as
    fill the GPU where the chunks are small (`chunks_side_by_side`), else one.
    Raises ValueError / RunError (nothing written) for a bad spec, a locked DIR, a DIR of another spec or
    a run larger than the free disk.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if side_by_side_count is not None:
        require_int("side_by_side_count", side_by_side_count, 1)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, float)) \
            or not checkpoint_every >= 0:  # NaN fails this too
        raise ValueError(f"checkpoint_every must be a number of seconds in [0, inf], got {checkpoint_every!r}")
    requested, backend = backend, resolve_backend(backend)
    check_precision(precision, backend)
    dist = Dist()
    dev = pick_device(backend, device, dist)
    dist.init(dev.type)
    store = RunStore(out)
    lock = None
    try:
        # rank 0 checks DIR, takes the lock and creates the run; the others wait for its verdict
        error = None
        if dist.rank == 0:
            try:
                if not store.check(sweep, backend, precision):
                    check_disk(sweep, out)  # before anything is created
                lock = store.lock().acquire()
                store.check(sweep, backend, precision)  # again, under the lock
                if not (store.dir / "spec.json").exists():
                    plan = make_plan(sweep, backend, dev, chunk_size, precision)
                    store.initialize(sweep, plan, _new_manifest(sweep, backend, dev, plan, chunk_size, precision),
                                     backend, precision)
                else:
                    store.initialize(sweep, None, None)
                    if not store.read_manifest():  # deleted: start a new one (the backend is in plan.json)
                        plan = store.read_plan()
                        store.write_manifest(_new_manifest(sweep, backend, dev, plan, chunk_size, precision))
                    if chunk_size is not None:
                        _warn_once("chunk", "--chunk-size is ignored when resuming (the plan is fixed)")
            except (ValueError, OSError) as e:
                error = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
        error = dist.broadcast(error)
        if error is not None:
            raise RunError(error)
        dist.barrier()
        # "auto" stays "auto" for train(): a group without a kernel then says so and uses the torch path
        return _run_chunks(sweep, store, backend, dev, dist, quiet, argv, train_fn, checkpoint_every,
                           train_backend="auto" if requested == "auto" else None,
                           side_by_side_count=side_by_side_count, precision=precision)
    finally:
        if lock is not None:
            lock.release()
        dist.close()


def check_precision(precision: str, backend: str) -> None:
    """ValueError unless `precision` is one of PRECISIONS and, other than "ieee", trained by the kernels."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "ieee" and backend != "triton":
        raise ValueError(f"precision {precision!r} applies to the triton backend (a CUDA GPU, or "
                         f"TRITON_INTERPRET=1); this run trains with {backend!r}, in float32: use 'ieee'")


def _new_manifest(sweep, backend, dev, plan, chunk_size, precision="ieee") -> dict:
    from . import __version__

    return {
        "name": sweep.name, "superpos_version": __version__, "created": now_iso(), "status": "running",
        "backend": backend, "precision": precision, "device": device_info(dev), "versions": versions(), "git": git_commit(),
        "n_models": sweep.n_models, "n_points": sweep.n_points, "n_groups": sweep.n_groups,
        "n_chunks": int(len(plan)),
        "chunking": {"chunk_size": chunk_size, "cpu_memory_budget": CPU_MEMORY_BUDGET,
                     "cpu_work_budget": CPU_WORK_BUDGET, "gpu_memory_fraction": GPU_MEMORY_FRACTION},
        "runs": [], "timings": {},
    }


def check_plan(sweep: Sweep, plan: np.ndarray, directory) -> None:
    """RunError unless the plan's chunks tile the spec's models, each inside its group."""
    starts = np.array([g.start for g in sweep.groups] + [sweep.n_models], dtype=np.int64)
    ok = len(plan) and plan[0, 1] == 0 and plan[-1, 2] == sweep.n_models and (plan[1:, 1] == plan[:-1, 2]).all()
    if ok:
        g = plan[:, 0]
        ok = ((g >= 0) & (g < sweep.n_groups)).all() and (plan[:, 1] < plan[:, 2]).all()
        ok = ok and (plan[:, 1] >= starts[g]).all() and (plan[:, 2] <= starts[g + 1]).all()
    if not ok:
        raise RunError(f"{directory}: plan.json does not match the spec's {sweep.n_models} models; the directory "
                       "is damaged (use another --out)")


def verified_done_chunks(store, plan) -> set:
    """The finished chunks whose files check out; damaged ones are discarded (to be trained again), and
    with them the table of a run that was complete."""
    done = set()
    for i in sorted(store.done_chunks(len(plan))):
        problem = store.chunk_problem(i, int(plan[i, 1]), int(plan[i, 2]))
        if problem is None:
            done.add(i)
            store.remove_checkpoint(i)  # left behind by a kill between the chunk's last write and its removal
            continue
        store.discard_chunk(i)
        store.discard_table()
        print(f"superpos: chunk {i} is damaged ({problem}); training it again", file=sys.stderr)
    return done


class _Checkpointer:
    """The `checkpoint` callback of one chunk: saves the offered state when `every` seconds have passed."""

    def __init__(self, store, chunk, start, stop, every):
        self.store, self.chunk, self.start, self.stop, self.every = store, chunk, start, stop, every
        self.last = time.monotonic()
        self.saved_step = None

    def __call__(self, step, snapshot):
        if time.monotonic() - self.last >= self.every:
            self.store.write_checkpoint(self.chunk, snapshot(), self.start, self.stop)
            self.saved_step = step
            self.last = time.monotonic()


def _set_status(store, record, status, run_status=None, **fields) -> None:
    """Record how this invocation ended (`status`) and the run's state (`run_status`, default the same)
    in the manifest (best effort: the disk may be what failed)."""
    try:
        manifest = store.read_manifest()
        record.update(status=status, finished=now_iso(), **fields)
        if manifest.get("runs"):
            manifest["runs"][-1] = record
        manifest["status"] = run_status or status
        store.write_manifest(manifest, in_place_if_full=True)
    except (OSError, ValueError) as err:
        print(f"superpos: could not record status {status!r} in the manifest: {err}", file=sys.stderr)


def chunks_side_by_side(sweep, plan, todo, backend, dev, requested: int | None, precision: str = "ieee") -> int:
    """Chunks to train at once: `requested` when given; else, on a GPU with the triton backend,
    side_by_side.auto_count from the chunks' programs and memory; else 1 (the torch path keeps the CPU's
    cores, or the GPU, busy by itself)."""
    if requested is not None:
        return max(1, min(requested, len(todo)))
    if dev.type != "cuda" or resolve_backend(backend) != "triton" or len(todo) < 2:
        return 1
    from .triton_backend import launch_capability, sm_count, unsupported_option

    sms = sm_count(dev)
    capability = launch_capability(dev)
    chunks = []
    for i in todo:
        g, start, stop = (int(x) for x in plan[i])
        grp = sweep.groups[g]
        if unsupported_option(grp.spec, grp.data) is not None:
            return 1  # a group the kernels do not train: the torch path
        chunks.append((side_by_side.programs_per_launch(grp, stop - start, sms, capability, precision),
                       (stop - start) * bytes_per_model(grp, "triton", precision, capability)))
    free, _ = torch.cuda.mem_get_info(dev)
    return side_by_side.auto_count(chunks, sms, free)


def _run_chunks(sweep, store, backend, dev, dist, quiet, argv, train_fn, checkpoint_every,
                train_backend=None, side_by_side_count=None, precision="ieee") -> dict:
    t_start = time.perf_counter()
    plan = store.read_plan()
    n_chunks = len(plan)
    check_plan(sweep, plan, store.dir)
    done = verified_done_chunks(store, plan) if dist.rank == 0 else store.done_chunks(n_chunks)
    dist.barrier()
    if dist.rank != 0:
        done = store.done_chunks(n_chunks)
    mine = [i for i in range(n_chunks) if i % dist.world_size == dist.rank]
    todo = [i for i in mine if i not in done]
    sizes = plan[:, 2] - plan[:, 1]
    record = {"started": now_iso(), "argv": list(argv or []), "host": device_info(dev)["host"], "pid": os.getpid(),
              "world_size": dist.world_size, "device": str(dev), "chunks_before": len(done), "status": "running"}
    if dist.rank == 0:
        manifest = store.read_manifest()
        manifest.setdefault("runs", []).append(record)
        manifest["status"] = "running"
        store.write_manifest(manifest)
        if done and not quiet:
            print(f"superpos: resuming {store.dir}: {len(done)} of {n_chunks} chunks already done", file=sys.stderr)

    def group(i):
        return sweep.groups[int(plan[i, 0])]

    costs = {i: model_cost(group(i)) * group(i).cfg.steps for i in mine}
    ckpt_steps = {i: store.checkpoint_step(i) for i in todo}
    done_work = sum(int(sizes[i]) * costs[i] for i in mine if i in done)
    done_work += sum(int(sizes[i]) * model_cost(group(i)) * ckpt_steps[i] for i in todo)
    desc = sweep.name if dist.world_size == 1 else f"{sweep.name} [rank {dist.rank}/{dist.world_size}]"
    bar = _Progress(sum(int(sizes[i]) * costs[i] for i in mine), done_work, int(sizes[mine].sum()) if mine else 0,
                    sum(int(sizes[i]) for i in mine if i in done), quiet or dist.rank != 0, desc)
    _preload()  # one-time imports happen here, not inside the first chunk
    totals = {"train_seconds": 0.0, "models": 0}
    counts = {"ok": 0, "diverged": 0}
    lock = threading.Lock()
    stop_all = threading.Event()  # side by side: set when a chunk fails, so that the others stop
    # passed only when not the default, so that a train_fn without kernel options (tests) still fits
    kernel_options = {"input_precision": precision} if precision != "ieee" else {}

    def train_chunk(i):
        g, start, stop = (int(x) for x in plan[i])
        grp = sweep.groups[g]
        pop = sweep.population(start, stop)
        resume = store.read_checkpoint(i, start, stop)
        report = bar.start(i, stop - start, grp.cfg.steps, model_cost(grp),
                           (stop - start) * (resume.step if resume else 0))

        def progress(model_steps):
            if stop_all.is_set():
                raise side_by_side.Stopped
            report(model_steps)
        saver = _Checkpointer(store, i, start, stop, checkpoint_every)
        t1 = time.perf_counter()
        W, b, hist, steps, status, splits, extra, trained_by = train_splitting(
            pop, grp.cfg, train_backend or backend, dev, progress, train_fn, resume=resume, checkpoint=saver,
            **kernel_options)
        t2 = time.perf_counter()
        rows = chunk_rows(sweep, i, start, stop, hist, status, W)
        tensors = {"W": W.float().cpu(), "b": b.float().cpu(), "loss_history": hist.float().cpu(),
                   "loss_steps": torch.as_tensor(steps, dtype=torch.int64),
                   "model_id": torch.arange(start, stop, dtype=torch.int64), **extra}
        info = {"chunk": i, "group": g, "start": start, "stop": stop, "models": stop - start, "rank": dist.rank,
                "device": str(dev), "host": record["host"], "backend": trained_by,
                "precision": precision if trained_by == "triton" else "ieee", "train_seconds": t2 - t1,
                "side_by_side": count, "resumed_from_step": resume.step if resume is not None else 0,
                "oom_splits": splits, "finished": now_iso()}
        store.write_chunk(i, tensors, rows, info)
        bar.finish(i)
        with lock:
            totals["train_seconds"] += t2 - t1
            totals["models"] += stop - start
            for s in status:
                counts[s] = counts.get(s, 0) + 1

    count = chunks_side_by_side(sweep, plan, todo, train_backend or backend, dev, side_by_side_count, precision)
    record["side_by_side"] = count
    t_loop = time.perf_counter()
    try:
        if count == 1:
            for i in todo:
                train_chunk(i)
        else:  # the costliest chunks first, so that the last to start are short (same results in any order)
            side_by_side.run(sorted(todo, key=lambda i: -int(sizes[i]) * costs[i]), count, train_chunk, dev, stop_all)
    except KeyboardInterrupt:
        if dist.rank == 0:
            _set_status(store, record, "interrupted", "incomplete", chunks_trained=trained_chunks(store, todo))
        raise
    except BaseException as err:  # no space, out of memory, a device error...: the manifest says so
        _set_status(store, record, "failed", chunks_trained=trained_chunks(store, todo),
                    error=f"{type(err).__name__}: {' '.join(str(err).split())[:500]}")
        raise
    finally:
        bar.close()
    t_loop_end = time.perf_counter()
    dist.barrier()
    train_seconds, trained_models = totals["train_seconds"], totals["models"]

    summary = {"dir": str(store.dir), "n_models": sweep.n_models, "n_chunks": n_chunks, "chunks_trained": len(todo),
               "models_trained": trained_models, "ok": counts.get("ok", 0), "diverged": counts.get("diverged", 0),
               "train_seconds": train_seconds, "loop_seconds": t_loop_end - t_loop, "complete": False}
    # side by side, the chunks' training times overlap (their sum exceeds the loop's): no overhead then
    summary["overhead_fraction"] = max(0.0, (summary["loop_seconds"] - train_seconds) / summary["loop_seconds"]) \
        if summary["loop_seconds"] > 0 else 0.0
    if dist.rank == 0:
        complete = len(store.done_chunks(n_chunks)) == n_chunks
        t_asm = time.perf_counter()
        table_sha = store.assemble(n_chunks) if complete else None
        t_end = time.perf_counter()
        infos = store.chunk_infos(n_chunks)
        manifest = store.read_manifest()
        record.update(status="complete" if complete else "incomplete", finished=now_iso(),
                      wall_seconds=t_end - t_start, chunks_trained=len(todo), models_trained=trained_models,
                      train_seconds=train_seconds, loop_seconds=summary["loop_seconds"],
                      overhead_fraction=summary["overhead_fraction"], assemble_seconds=t_end - t_asm)
        manifest["runs"][-1] = record
        manifest["status"] = "complete" if complete else "incomplete"
        if table_sha is not None:
            manifest["table_sha256"] = table_sha
        manifest["timings"] = {
            "train_seconds_all_chunks": sum(x.get("train_seconds", 0.0) for x in infos),
            "wall_seconds_all_runs": sum(r.get("wall_seconds", 0.0) for r in manifest["runs"]),
            "last_run_overhead_fraction": summary["overhead_fraction"],
        }
        store.write_manifest(manifest)
        summary["complete"] = complete
        summary["wall_seconds"] = t_end - t_start
        if complete and not quiet:
            import pyarrow.parquet as pq

            status = pq.read_table(store.dir / "models.parquet", columns=["status"]).column("status").to_pylist()
            n_div = sum(s != "ok" for s in status)
            print(f"superpos: {sweep.n_models} models in {store.dir} ({sweep.n_models - n_div} ok, {n_div} diverged); "
                  f"this run trained {trained_models} in {summary['wall_seconds']:.1f} s", file=sys.stderr)
    return summary
