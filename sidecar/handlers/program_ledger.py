"""Programs that outlive a killed sidecar: written down while they run, killed at the next start.

``process.run`` starts each program in a session (Windows: a process group) of its own, so that a
stop reaches its whole tree. A sidecar that exits cleanly kills what still runs (``atexit``), but
a kill -9, a crash or a power cut runs nothing: the program and its children ran on, adopted by
init, and the next launch re-ran the task beside them (two yt-dlp writing one file; a cancel
that stops only the new copy). So every program is recorded in a directory beside the database
while it runs, with its creation time, and the next sidecar on that database kills what is left
before it requeues anything.

The creation time tells our program from a later process that got the same id: a recorded group
whose leader now has another creation time is left alone; when the leader is gone, only members
of its group created after it are killed. psutil reads creation times on every platform the
sidecar ships for (it is imported only when a program runs or a record is left).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any

log = logging.getLogger(__name__)

_directory: str | None = None
_SAME_TIME_S = 0.01  # creation times read twice differ by float rounding only


def use(directory: str) -> int:
    """Record programs in ``directory`` from now on; first kill what a previous sidecar on the same
    database left running there. Returns how many program trees were killed."""
    global _directory
    _directory = directory
    killed = 0
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except OSError:
        return 0  # none recorded (the usual case: no psutil import, nothing to read)
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
            killed += _kill_leftover(int(entry["pid"]), float(entry["created"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("could not read the program record %s: %s", path, exc)
        try:
            os.remove(path)
        except OSError:
            pass
    if killed:
        log.warning("killed %d program(s) left running by a sidecar that did not exit cleanly", killed)
    return killed


def record(pid: int) -> None:
    """Write down a program just started (the leader of its own group), before anything else."""
    if _directory is None:
        return
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return  # already gone
    try:
        os.makedirs(_directory, mode=0o700, exist_ok=True)
        with open(os.path.join(_directory, f"{pid}.json"), "w", encoding="utf-8") as f:
            json.dump({"pid": pid, "created": created}, f)
    except OSError as exc:
        log.warning("could not record program %d (it would outlive a crash): %s", pid, exc)


def forget(pid: int) -> None:
    """The program's tree has been stopped and reaped: nothing to kill after a crash."""
    if _directory is None:
        return
    try:
        os.remove(os.path.join(_directory, f"{pid}.json"))
    except OSError:
        pass


def _kill_leftover(pid: int, created: float) -> int:
    import psutil

    try:
        leader: Any = psutil.Process(pid)
        if abs(leader.create_time() - created) > _SAME_TIME_S:
            return 0  # the id belongs to another process now: nothing of ours is left under it
    except psutil.NoSuchProcess:
        leader = None
    if os.name == "posix":
        return _kill_group(psutil, pid, created, leader)
    return _kill_descendants(psutil, pid, created, leader)  # pragma: no cover - Windows only


def _kill_group(psutil: Any, pgid: int, created: float, leader: Any) -> int:
    if pgid <= 1 or pgid == os.getpgrp():
        return 0  # never kill(-1) or our own group
    if leader is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
            return 1
        except OSError:
            return 0
    members = 0
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= created - _SAME_TIME_S:
                proc.kill()
                members += 1
        except (OSError, psutil.Error):
            continue
    return 1 if members else 0


def _kill_descendants(psutil: Any, pid: int, created: float, leader: Any) -> int:  # pragma: no cover
    # Windows does not re-parent orphans: their parent id still names the dead program.
    roots = [leader] if leader is not None else [
        p for p in psutil.process_iter(["ppid", "create_time"])
        if p.info["ppid"] == pid and p.info["create_time"] >= created - _SAME_TIME_S
    ]
    killed = 0
    for root in roots:
        try:
            for proc in [*root.children(recursive=True), root]:
                proc.kill()
            killed = 1
        except psutil.Error:
            continue
    return killed
