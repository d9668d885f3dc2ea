"""``task-sidecar-harness replay FILE``: re-send a recording's requests to a fresh sidecar and report
what came back differently.

Task ids differ between runs: every UUID in a replayed response is paired with the UUID at the same
place in the recorded response, and later requests are rewritten to use the new ids. Compared:
each response (ignoring timestamps, pid, dbPath, version, and the progress/message of tasks that
were still running), and each task's sequence of statuses from ``task.updated``.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import time
from typing import Any

from sidecar.harness.board import Event
from sidecar.harness.recorder import load_recording
from sidecar.harness.session import SidecarOptions, open_sidecar

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
VOLATILE = {"createdAt", "updatedAt", "startedAt", "completedAt", "runAt", "pid", "dbPath", "version", "seq"}
RUNNING_VOLATILE = {"progress", "message"}
MAX_SETTLE_S = 30.0
CAUSAL_WAIT_S = 10.0


class IdMap:
    """Recorded UUID <-> replayed UUID, learnt by walking recorded and replayed values side by side."""

    def __init__(self) -> None:
        self.new_of: dict[str, str] = {}
        self.old_of: dict[str, str] = {}

    def learn(self, old: Any, new: Any) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for k in old.keys() & new.keys():
                self.learn(old[k], new[k])
        elif isinstance(old, list) and isinstance(new, list):
            for o, n in zip(old, new):
                self.learn(o, n)
        elif isinstance(old, str) and isinstance(new, str) and UUID.fullmatch(old) and UUID.fullmatch(new):
            if old not in self.new_of and new not in self.old_of:
                self.new_of[old] = new
                self.old_of[new] = old

    def to_new(self, value: Any) -> Any:
        return _map_strings(value, lambda s: UUID.sub(lambda m: self.new_of.get(m.group(0), m.group(0)), s))

    def to_old(self, value: Any) -> Any:
        return _map_strings(value, lambda s: UUID.sub(lambda m: self.old_of.get(m.group(0), m.group(0)), s))


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(k): _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def normalize(value: Any) -> Any:
    """Drop what legitimately differs between two runs."""
    if isinstance(value, dict):
        running = value.get("status") == "RUNNING" and "type" in value
        return {
            k: normalize(v)
            for k, v in value.items()
            if k not in VOLATILE and not (running and k in RUNNING_VOLATILE)
        }
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def status_sequences(notifications: list[tuple[str, Any]]) -> dict[str, list[str]]:
    """Per task id, the statuses its task.updated notifications went through (repeats collapsed)."""
    seqs: dict[str, list[str]] = {}
    for method, params in notifications:
        if method != "task.updated" or not isinstance(params, dict) or not isinstance(params.get("task"), dict):
            continue
        task = params["task"]
        seq = seqs.setdefault(task.get("id"), [])
        if not seq or seq[-1] != task.get("status"):
            seq.append(task.get("status"))
    return seqs


def _recorded(entries: list[dict[str, Any]]) -> tuple[list[tuple[float, str, Any, Any, int]], list[tuple[str, Any]], float]:
    """(time, kind, message, recorded answer, notifications received before it) per thing sent;
    recorded notifications; recorded tail."""
    answers_by_id: dict[Any, Any] = {}
    sends: list[tuple[float, str, Any, Any, int]] = []
    notes: list[tuple[str, Any]] = []
    pending_anonymous: list[int] = []  # indexes of sends answered by id-null responses / batch arrays
    last_send_t = last_t = 0.0
    for e in entries:
        d, t = e.get("dir"), float(e.get("t", 0))
        last_t = max(last_t, t)
        msg = e.get("msg")
        if d == "send" and msg is not None:
            last_send_t = t
            if isinstance(msg, dict) and "id" in msg and msg["id"] is not None:
                sends.append((t, "request", msg, None, len(notes)))
            elif isinstance(msg, dict):
                sends.append((t, "notify", msg, None, len(notes)))
            else:
                sends.append((t, "raw", json.dumps(msg), None, len(notes)))
                pending_anonymous.append(len(sends) - 1)
        elif d == "meta" and isinstance(msg, dict) and msg.get("event") == "send_raw":
            last_send_t = t
            sends.append((t, "raw", msg.get("raw", ""), None, len(notes)))
            pending_anonymous.append(len(sends) - 1)
        elif d == "recv" and msg is not None:
            if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                notes.append((msg["method"], msg.get("params")))
            elif isinstance(msg, dict) and msg.get("id") is not None:
                answers_by_id[msg["id"]] = msg
            elif pending_anonymous:
                i = pending_anonymous.pop(0)
                sends[i] = (*sends[i][:3], msg, sends[i][4])
    out = []
    for t, kind, msg, answer, seen in sends:
        if kind == "request":
            answer = answers_by_id.get(msg["id"])
        elif kind == "raw" and answer is None:
            # a raw line that was a well-formed request with an id
            try:
                parsed = json.loads(msg)
                if isinstance(parsed, dict) and parsed.get("id") is not None:
                    answer = answers_by_id.get(parsed["id"])
            except json.JSONDecodeError:
                pass
        out.append((t, kind, msg, answer, seen))
    return out, notes, max(0.0, last_t - last_send_t)


def replay(opts: SidecarOptions, path: str, timing: bool = True, settle: float | None = None) -> int:
    def out(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    try:
        entries = load_recording(path)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"task-sidecar-harness: {exc}\n")
        return 2
    sends, recorded_notes, tail = _recorded(entries)
    if not sends:
        sys.stderr.write(f"task-sidecar-harness: {path} holds no sent messages\n")
        return 2
    ids = IdMap()
    differences: list[str] = []
    same = 0
    out(f"replaying {len(sends)} message(s) from {path}")
    with open_sidecar(opts) as client:
        board = client.board

        def replayed_seqs() -> dict[str, list[str]]:
            seqs = status_sequences([(ev.method, ev.params) for ev in list(board.events)])
            return {ids.old_of.get(k, k): v for k, v in seqs.items()}

        start, first_t = time.monotonic(), sends[0][0]
        for n, (t, kind, msg, recorded, seen) in enumerate(sends, 1):
            if timing:
                delay = (t - first_t) - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(min(delay, MAX_SETTLE_S))
            # Causal order: the recording sent this after seeing some task reach some status (a
            # scenario's await, a person reading the live view); wait for the same here, a while.
            before = status_sequences(recorded_notes[:seen])
            board.wait_for(lambda: _reached_or_diverged(before, replayed_seqs()), CAUSAL_WAIT_S)
            label = msg.get("method") if isinstance(msg, dict) else f"raw {str(msg)[:40]}"
            if kind == "notify":
                client.transport.write(ids.to_new(msg))
                continue
            if kind == "request":
                got: Any = client.send_message(ids.to_new(msg))
            else:
                got = client.send_raw(ids.to_new(msg) if isinstance(msg, str) else json.dumps(ids.to_new(msg)))
            if recorded is None:
                out(f"  ?    {n:>3}  {label}: no recorded answer to compare with")
                continue
            ids.learn(recorded, got)
            want, have = normalize(recorded), normalize(ids.to_old(got))
            if want == have:
                same += 1
                out(f"  same {n:>3}  {label}")
            else:
                diff = _diff(want, have)
                differences.append(f"response to message {n} ({label}) differs:\n{diff}")
                out(f"  DIFF {n:>3}  {label}\n{diff}")
        recorded_seqs = status_sequences(recorded_notes)

        wait = min(MAX_SETTLE_S, tail + 0.5) if settle is None else settle
        board.wait_for(lambda: _seqs_equal(recorded_seqs, replayed_seqs()), wait)
        got_seqs = replayed_seqs()
    for task_id in sorted(set(recorded_seqs) | set(got_seqs)):
        want_s, have_s = recorded_seqs.get(task_id, []), got_seqs.get(task_id, [])
        if want_s != have_s:
            new_id = ids.new_of.get(task_id, "?")
            line = (f"task {task_id[:8]} (now {new_id[:8]}): statuses differ\n"
                    f"    recorded: {' -> '.join(want_s) or '(none)'}\n    replayed: {' -> '.join(have_s) or '(none)'}")
            differences.append(line)
            out("  DIFF      " + line)
    compared = sum(1 for s in sends if s[1] != "notify" and s[3] is not None)
    out(f"{same} of {compared} responses identical; {len(recorded_seqs)} task(s) compared by status sequence")
    if differences:
        out(f"REPLAY DIFFERS: {len(differences)} difference(s)")
        return 1
    out("REPLAY MATCHES the recording")
    return 0


def _reached_or_diverged(before: dict[str, list[str]], now: dict[str, list[str]]) -> bool:
    """Every task has gone through at least the statuses it had gone through in the recording, or
    some task has taken another path (then waiting longer is pointless: it is reported at the end)."""
    reached = True
    for k, want in before.items():
        have = now.get(k, [])
        if have[: len(want)] == want:
            continue
        if want[: len(have)] != have:
            return True  # diverged
        reached = False
    return reached


def _seqs_equal(a: dict[str, list[str]], b: dict[str, list[str]]) -> bool:
    return all(b.get(k) == v for k, v in a.items())


def _diff(want: Any, have: Any) -> str:
    a = json.dumps(want, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    b = json.dumps(have, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return "\n".join("    " + line for line in difflib.unified_diff(a, b, "recorded", "replayed", lineterm="", n=2))
