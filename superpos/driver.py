"""The sweep driver: a Sweep -> chunks -> trained, stored models. `superpos run` calls `run_sweep`.

- Chunking: each group (one shape and TrainConfig) is cut into chunks that fit a memory budget
  (`chunk_budget`), and on the CPU also a work budget so that a chunk takes minutes, not hours (a kill
  loses at most one chunk). The plan is fixed when DIR is created and reused on resume.
- Resume: chunks whose rows are on disk are skipped. Since every model's result depends only on its seed
  and config, the resumed run's results are bit-identical to an uninterrupted one (same backend/device).
- Divergence: models whose loss or weights stop being finite are stored with status "diverged".
- Out of memory: a chunk that raises an OOM is split in two and each half retried (recursively).
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
import os
import sys
import time

import numpy as np
import torch

from .config import final_loss
from .snapshots import chunk_extras, concat_extras
from .store import RunError, RunStore, device_info, git_commit, now_iso, versions
from .sweep import Group, Sweep, plan_chunks
from .train import resolve_backend, train

CPU_MEMORY_BUDGET = 512 * 2**20  # bytes of training temporaries per CPU chunk
GPU_MEMORY_FRACTION = 0.5  # of the free device memory when the plan is made
MAX_CHUNK_MODELS = 1 << 20
# CPU work budget per chunk, in element-steps (models x steps x batch x (n + m)). The torch path runs
# about 3e7 of them a second on the 2-core dev machine (n=2, m=1: ~1e4 model-steps/s at batch 1024), so
# this is ~5 minutes of work there.
CPU_WORK_BUDGET = 1e10


# --------------------------------------------------------------------------------------------------
# chunk sizing
# --------------------------------------------------------------------------------------------------
def bytes_per_model(group: Group, backend: str) -> int:
    """Device memory one model of `group` needs while it trains (an estimate, on the safe side)."""
    n, m = group.spec.n_features, group.spec.n_hidden
    B, cfg = group.cfg.batch_size, group.cfg
    state = 4 * 4 * (m * n + n)  # W, b, and two AdamW moments, float32
    history = 4 * len(cfg.logged_steps())
    if not group.spec.tied:
        state += 4 * 4 * (m * n + m)  # W_dec, b_hidden and their moments
    from .triton_backend import unsupported_option
    if backend == "triton" and unsupported_option(group.spec, group.data) is None:
        # batches live in registers; only state, history and gradient slices touch memory
        from .kernels.configs import choose_config
        kcfg = choose_config(n, m, B)
        slices = 0 if kcfg.kind == "small" else -(-B // kcfg.slice_size)  # tiled: per-slice partial gradients
        return state + history + 4 * slices * (m * n + n + 1) + 64
    # torch path (also where "auto" falls back from triton): the batch and ~10 same-size temporaries
    # (x, z, y, diff, gz, RNG words...) plus h, gh
    return state + history + 4 * B * (12 * n + 4 * m)


def chunk_budget(group: Group, backend: str, device: torch.device) -> int:
    """The most models of `group` one chunk should hold on `device`."""
    per = bytes_per_model(group, backend)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cap = int(GPU_MEMORY_FRACTION * free) // per
    else:
        cap = CPU_MEMORY_BUDGET // per
        work = group.cfg.steps * group.cfg.batch_size * (group.spec.n_features + group.spec.n_hidden)
        cap = min(cap, int(CPU_WORK_BUDGET // work))
    return int(max(1, min(cap, MAX_CHUNK_MODELS)))


def make_plan(sweep: Sweep, backend: str, device: torch.device, chunk_size: int | None = None) -> np.ndarray:
    if chunk_size is not None:
        return plan_chunks(sweep, lambda g: chunk_size)
    return plan_chunks(sweep, lambda g: chunk_budget(g, backend, device))


# --------------------------------------------------------------------------------------------------
# training one chunk
# --------------------------------------------------------------------------------------------------
def _is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def train_splitting(pop, cfg, backend, device, progress=None, train_fn=train, _depth=0):
    """`train`, but a population that runs out of memory is split in two and each half retried.

    `progress(models_done)` receives the models' fraction of steps done, in model units.
    Returns (W, b, loss_history, loss_steps, status, n_splits, extra): extra holds the other tensors a
    chunk stores (untied parameters, snapshots; superpos.snapshots.chunk_extras).
    """
    K = len(pop)
    last = [0.0]

    def report(steps_done):
        if progress is not None:
            done = K * steps_done / cfg.steps
            progress(done - last[0])
            last[0] = done

    try:
        res = train_fn(pop, cfg, backend=backend, device=device, progress=report)
        return res.W, res.b, res.loss_history, np.asarray(res.loss_steps), list(res.status), 0, chunk_extras(res)
    except Exception as err:  # noqa: BLE001 - only OOM is handled, everything else re-raised
        if not _is_oom(err) or K == 1:
            raise
    if progress is not None and last[0]:
        progress(-last[0])  # the failed attempt's progress is taken back
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    half = K // 2
    print(f"superpos: out of memory with {K} models; splitting into {half} + {K - half}", file=sys.stderr)
    a = train_splitting(pop.select(slice(0, half)), cfg, backend, device, progress, train_fn, _depth + 1)
    b = train_splitting(pop.select(slice(half, K)), cfg, backend, device, progress, train_fn, _depth + 1)
    return (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), torch.cat([a[2], b[2]]), a[3],
            a[4] + b[4], 1 + a[5] + b[5], concat_extras(a[6], b[6]))


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
        dev = torch.device(device)
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
    def __init__(self, total, initial, quiet, desc):
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="model", file=sys.stderr, desc=desc,
                            dynamic_ncols=True, smoothing=0.05, mininterval=0.5,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} models "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")

    def __call__(self, delta):
        if self.bar is not None and delta:
            self.bar.update(delta)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_sweep(sweep: Sweep, out, backend: str = "auto", quiet: bool = False, chunk_size: int | None = None,
              device=None, argv=None, train_fn=train) -> dict:
    """Train every unfinished chunk of `sweep` into run directory `out`; returns a summary dict.

    Raises ValueError / RunError (nothing written) for a bad spec, a locked DIR or a DIR of another spec.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    requested, backend = backend, resolve_backend(backend)
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
                store.check(sweep, backend)
                lock = store.lock().acquire()
                store.check(sweep, backend)  # again, under the lock
                if not (store.dir / "spec.json").exists():
                    plan = make_plan(sweep, backend, dev, chunk_size)
                    store.initialize(sweep, plan, _new_manifest(sweep, backend, dev, plan, chunk_size))
                else:
                    store.initialize(sweep, None, None)
                    if chunk_size is not None:
                        _warn_once("chunk", "--chunk-size is ignored when resuming (the plan is fixed)")
            except (ValueError, OSError) as e:
                error = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
        error = dist.broadcast(error)
        if error is not None:
            raise RunError(error)
        dist.barrier()
        # "auto" stays "auto" for train(): a group without a kernel then says so and uses the torch path
        return _run_chunks(sweep, store, backend, dev, dist, quiet, argv, train_fn,
                           train_backend="auto" if requested == "auto" else None)
    finally:
        if lock is not None:
            lock.release()
        dist.close()


def _new_manifest(sweep, backend, dev, plan, chunk_size) -> dict:
    from . import __version__

    return {
        "name": sweep.name, "superpos_version": __version__, "created": now_iso(), "status": "running",
        "backend": backend, "device": device_info(dev), "versions": versions(), "git": git_commit(),
        "n_models": sweep.n_models, "n_points": sweep.n_points, "n_groups": sweep.n_groups,
        "n_chunks": int(len(plan)),
        "chunking": {"chunk_size": chunk_size, "cpu_memory_budget": CPU_MEMORY_BUDGET,
                     "cpu_work_budget": CPU_WORK_BUDGET, "gpu_memory_fraction": GPU_MEMORY_FRACTION},
        "runs": [], "timings": {},
    }


def _run_chunks(sweep, store, backend, dev, dist, quiet, argv, train_fn, train_backend=None) -> dict:
    t_start = time.perf_counter()
    plan = store.read_plan()
    n_chunks = len(plan)
    if not n_chunks or plan[0, 1] != 0 or plan[-1, 2] != sweep.n_models or (plan[1:, 1] != plan[:-1, 2]).any():
        raise RunError(f"{store.dir}: plan.json does not cover the spec's {sweep.n_models} models; the directory is damaged")
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

    own_total = int(sizes[mine].sum()) if mine else 0
    own_done = int(sizes[[i for i in mine if i in done]].sum()) if done else 0
    desc = sweep.name if dist.world_size == 1 else f"{sweep.name} [rank {dist.rank}/{dist.world_size}]"
    bar = _Progress(own_total, own_done, quiet or dist.rank != 0, desc)
    _preload()  # one-time imports happen here, not inside the first chunk
    train_seconds = 0.0
    trained_models = 0
    counts = {"ok": 0, "diverged": 0}
    t_loop = time.perf_counter()
    try:
        for i in todo:
            group, start, stop = (int(x) for x in plan[i])
            grp = sweep.groups[group]
            pop = sweep.population(start, stop)
            t1 = time.perf_counter()
            W, b, hist, steps, status, splits, extra = train_splitting(pop, grp.cfg, train_backend or backend,
                                                                       dev, bar, train_fn)
            t2 = time.perf_counter()
            rows = chunk_rows(sweep, i, start, stop, hist, status, W)
            tensors = {"W": W.float().cpu(), "b": b.float().cpu(), "loss_history": hist.float().cpu(),
                       "loss_steps": torch.as_tensor(steps, dtype=torch.int64),
                       "model_id": torch.arange(start, stop, dtype=torch.int64), **extra}
            info = {"chunk": i, "group": group, "models": stop - start, "rank": dist.rank, "device": str(dev),
                    "host": record["host"], "backend": backend, "train_seconds": t2 - t1,
                    "oom_splits": splits, "finished": now_iso()}
            store.write_chunk(i, tensors, rows, info)
            train_seconds += t2 - t1
            trained_models += stop - start
            for s in status:
                counts[s] = counts.get(s, 0) + 1
    except KeyboardInterrupt:
        if dist.rank == 0:
            manifest = store.read_manifest()
            record.update(status="interrupted", finished=now_iso(), chunks_trained=trained_chunks(store, todo))
            manifest["runs"][-1] = record
            manifest["status"] = "incomplete"
            store.write_manifest(manifest)
        raise
    finally:
        bar.close()
    t_loop_end = time.perf_counter()
    dist.barrier()

    summary = {"dir": str(store.dir), "n_models": sweep.n_models, "n_chunks": n_chunks, "chunks_trained": len(todo),
               "models_trained": trained_models, "ok": counts.get("ok", 0), "diverged": counts.get("diverged", 0),
               "train_seconds": train_seconds, "loop_seconds": t_loop_end - t_loop, "complete": False}
    summary["overhead_fraction"] = (summary["loop_seconds"] - train_seconds) / summary["loop_seconds"] \
        if summary["loop_seconds"] > 0 else 0.0
    if dist.rank == 0:
        complete = len(store.done_chunks(n_chunks)) == n_chunks
        t_asm = time.perf_counter()
        if complete:
            store.assemble(n_chunks)
        t_end = time.perf_counter()
        infos = store.chunk_infos(n_chunks)
        manifest = store.read_manifest()
        record.update(status="complete" if complete else "incomplete", finished=now_iso(),
                      wall_seconds=t_end - t_start, chunks_trained=len(todo), models_trained=trained_models,
                      train_seconds=train_seconds, loop_seconds=summary["loop_seconds"],
                      overhead_fraction=summary["overhead_fraction"], assemble_seconds=t_end - t_asm)
        manifest["runs"][-1] = record
        manifest["status"] = "complete" if complete else "incomplete"
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
