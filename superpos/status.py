"""`superpos status DIR`: where a run stands, read from its directory alone (no lock taken, nothing written).

For a sweep left running under nohup or a batch scheduler, whose progress bar is in a log somewhere:
chunks and models done, chunks in progress and the step each last checkpointed, whether the run is
running (its lock's holder, alive or not where that can be told; the time since the directory was last
written), interrupted, failed or complete, and the time left at the running invocation's pace (else at
that of the chunks finished so far).
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import time
from pathlib import Path

from .driver import model_cost
from .store import LOCK_FILE, SPEC_FILE, TABLE_FILE, RunLock, RunStore
from .sweep import Sweep


def run_status(directory) -> dict:
    """The state of run directory `directory` as a dict (see `format_status` for its reading).
    ValueError when it is not a run directory."""
    store = RunStore(directory)
    if not (store.dir / SPEC_FILE).exists():
        raise ValueError(f"{store.dir}: not a superpos run directory (no {SPEC_FILE})")
    sweep = Sweep(store.read_spec())
    plan = store.read_plan()
    manifest = store.read_manifest()
    done = store.done_chunks(len(plan))

    def work(i, steps=None):  # chunk i's model-steps x the work of one (the progress bar's units)
        grp = sweep.groups[int(plan[i, 0])]
        return int(plan[i, 2] - plan[i, 1]) * (grp.cfg.steps if steps is None else steps) * model_cost(grp)

    in_progress = []
    for i in range(len(plan)):
        step = store.checkpoint_step(i) if i not in done else 0
        if step:
            in_progress.append({"chunk": i, "models": int(plan[i, 2] - plan[i, 1]), "step": step,
                                "steps": sweep.groups[int(plan[i, 0])].cfg.steps})
    total = sum(work(i) for i in range(len(plan)))
    finished = sum(work(i) for i in done)
    checkpointed = sum(work(c["chunk"], c["step"]) for c in in_progress)
    infos = [x for x in store.chunk_infos(len(plan)) if x.get("chunk") in done]
    runs = manifest.get("runs", [])
    state = _state(store, manifest, len(done) == len(plan))
    left = None
    if len(done) < len(plan):
        left = _time_left(total - finished - checkpointed, finished + checkpointed, infos, work,
                          runs[-1] if runs and state["state"] == "running" else None)
    return {
        "dir": str(store.dir), "name": sweep.name, "models": sweep.n_models, "chunks": int(len(plan)),
        "backend": store.started_backend(), "precision": store.started_precision(),
        "device": (manifest.get("device") or {}).get("name"),
        "chunks_done": len(done), "models_done": int(sum(plan[i, 2] - plan[i, 1] for i in done)),
        "work_done": (finished + checkpointed) / total if total else 1.0, "in_progress": in_progress,
        "state": state, "last_run": runs[-1] if runs else None,
        "train_seconds": sum(x.get("train_seconds", 0.0) for x in infos), "seconds_left": left,
        "seconds_since_last_write": _since_last_write(store),
    }


def _since_last_write(store: RunStore) -> float | None:
    """Seconds since anything in DIR or its chunks was last written (a chunk, a checkpoint, the manifest):
    where the holder runs on another host, what says whether it still works."""
    times = []
    for folder in (store.dir, store.chunk_dir):
        for p in folder.iterdir() if folder.is_dir() else ():
            try:  # a running writer renames its temporaries away: one may be gone by now
                if p.is_file() and p.name != LOCK_FILE:
                    times.append(p.stat().st_mtime)
            except FileNotFoundError:
                continue
    return max(0.0, time.time() - max(times)) if times else None


def _time_left(remaining: int, done: int, infos: list, work, running: dict | None) -> float | None:
    """Seconds to train `remaining` work units: at the pace of the running invocation (the work done since
    it started, over the time since), else at that of the finished chunks trained from their start."""
    if running is not None and running.get("started"):
        started = running["started"]
        before = sum(work(x["chunk"]) for x in infos if x.get("finished", "") < started)
        elapsed = (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(started)).total_seconds()
        if done > before and elapsed > 0:
            return remaining * elapsed / (done - before)
    timed = [x for x in infos if not x.get("resumed_from_step")]  # a resumed chunk's seconds cover part of it
    seconds, timed_work = sum(x.get("train_seconds", 0.0) for x in timed), sum(work(x["chunk"]) for x in timed)
    return remaining * seconds / timed_work if timed_work and seconds > 0 else None


def _state(store: RunStore, manifest: dict, all_done: bool) -> dict:
    """complete | running (the lock's holder, alive or not where it can be told) | what the manifest says."""
    if all_done and (store.dir / TABLE_FILE).exists():
        return {"state": "complete"}
    try:  # a finishing run removes it: then there is no holder
        holder = (store.dir / LOCK_FILE).read_text(errors="replace").strip()
    except FileNotFoundError:
        holder = ""
    if holder:  # RunLock writes "pid P on HOST since T"; a finished run removes the file
        pid_host = RunLock.parse_holder(holder)
        alive = _alive(pid_host[0]) if pid_host is not None and pid_host[1] == socket.gethostname() else None
        if alive is not False:
            return {"state": "running", "holder": holder, "alive": alive}
    status = manifest.get("status") or "unknown"
    last = (manifest.get("runs") or [{}])[-1]
    state = {"state": "stopped" if status == "running" else status}  # "running" with no live holder: killed
    if last.get("error"):
        state["error"] = last["error"]
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{s} s")


def _count(k: int, noun: str) -> str:
    return f"{k:,} {noun}{'' if k == 1 else 's'}"


def format_status(st: dict) -> str:
    """The status as a few lines of text."""
    how = ", ".join(x for x in (st["backend"], st["precision"] if st["backend"] == "triton" else None,
                                st["device"]) if x)
    lines = [f"{st['dir']}: {st['name']}, {_count(st['models'], 'model')} in {_count(st['chunks'], 'chunk')} ({how})",
             f"done: {st['chunks_done']:,} of {_count(st['chunks'], 'chunk')}, {st['models_done']:,} of "
             f"{_count(st['models'], 'model')}, {100 * st['work_done']:.0f}% of the work"]
    for c in st["in_progress"]:
        lines.append(f"in progress: chunk {c['chunk']} ({_count(c['models'], 'model')}) checkpointed at step "
                     f"{c['step']:,} of {c['steps']:,}")
    state = st["state"]
    text = {"complete": "complete: every model trained and the table written (`superpos plot DIR`)",
            "stopped": "stopped: no process holds the run (killed?); rerun `superpos run` to resume",
            "interrupted": "interrupted; rerun `superpos run` to resume",
            "incomplete": "incomplete; rerun `superpos run` to resume",
            "failed": "failed; rerun `superpos run` to resume after fixing the cause"}.get(state["state"])
    if state["state"] == "running":
        alive = {True: "alive", False: "not alive", None: "on another host: not checked"}[state["alive"]]
        text = f"running: {state['holder']} ({alive})"
    lines.append("state: " + (text or state["state"]))
    if state.get("error"):
        lines.append(f"error: {state['error']}")
    if state["state"] != "complete" and st["seconds_since_last_write"] is not None:
        lines.append(f"last write to the directory: {_duration(st['seconds_since_last_write'])} ago "
                     "(a checkpoint every few minutes while a chunk trains)")
    if st["train_seconds"]:
        lines.append(f"training so far: {_duration(st['train_seconds'])} in finished chunks")
    if st["seconds_left"] is not None and state["state"] == "running":
        lines.append(f"time left: about {_duration(st['seconds_left'])} at this run's pace")
    elif st["seconds_left"] is not None:
        lines.append(f"to finish: about {_duration(st['seconds_left'])} of training at the finished chunks' pace")
    return "\n".join(lines)


def print_status(directory) -> None:
    print(format_status(run_status(Path(directory))))
