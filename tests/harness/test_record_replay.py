"""``--record FILE`` and ``replay FILE``."""

from __future__ import annotations

import json
import re

from .helpers import SCENARIOS, run_harness


def _record(tmp_path, scenario: str = "quick.jsonl"):
    rec = tmp_path / "session.jsonl"
    proc = run_harness("--record", str(rec), "run", str(SCENARIOS / scenario))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return rec, [json.loads(line) for line in rec.read_text().splitlines()]


def test_record_writes_both_directions_with_timestamps(tmp_path) -> None:
    rec, entries = _record(tmp_path)
    assert entries[0]["dir"] == "meta" and entries[0]["msg"]["event"] == "spawn"
    assert all(isinstance(e["t"], float) for e in entries)
    assert [e["t"] for e in entries] == sorted(e["t"] for e in entries)
    recv = [e["msg"] for e in entries if e["dir"] == "recv"]
    sent = [e["msg"] for e in entries if e["dir"] == "send"]
    assert recv[0]["method"] == "sidecar.ready"
    assert [m["method"] for m in sent] == ["tasks.create", "tasks.list"]
    assert any(m.get("method") == "task.updated" and m["params"]["task"]["status"] == "COMPLETED" for m in recv)
    assert {m.get("id") for m in recv if "id" in m} == {m["id"] for m in sent}
    assert entries[-1]["dir"] == "meta" and entries[-1]["msg"] == {"event": "exit", "returncode": 0}


def test_replay_of_an_unchanged_recording_matches(tmp_path) -> None:
    rec, _ = _record(tmp_path, "lifecycle.yaml")
    proc = run_harness("replay", str(rec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "15 of 15 responses identical" in proc.stdout
    assert "REPLAY MATCHES the recording" in proc.stdout


def test_replay_reports_differences(tmp_path) -> None:
    rec, entries = _record(tmp_path)
    # Pretend the recorded sidecar answered tasks.list with a FAILED task and announced FAILED.
    doctored = []
    for e in entries:
        msg = e.get("msg")
        if e["dir"] == "recv" and isinstance(msg, dict) and isinstance(msg.get("result"), dict) and "tasks" in msg["result"]:
            msg["result"]["tasks"][0]["status"] = "FAILED"
        if e["dir"] == "recv" and isinstance(msg, dict) and msg.get("method") == "task.updated" and msg["params"]["task"]["status"] == "COMPLETED":
            msg["params"]["task"]["status"] = "FAILED"
        doctored.append(e)
    rec.write_text("".join(json.dumps(e) + "\n" for e in doctored))
    proc = run_harness("replay", "--settle", "1", str(rec))
    assert proc.returncode == 1
    out = proc.stdout
    assert "DIFF   2  tasks.list" in out
    assert re.search(r'^\s+-\s+"status": "FAILED",$', out, re.M)
    assert re.search(r'^\s+\+\s+"status": "COMPLETED",$', out, re.M)
    assert "statuses differ" in out
    assert "recorded: QUEUED -> RUNNING -> FAILED" in out
    assert "replayed: QUEUED -> RUNNING -> COMPLETED" in out
    assert "REPLAY DIFFERS" in out


def test_replay_rejects_a_file_that_is_not_a_recording(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    proc = run_harness("replay", str(bad))
    assert proc.returncode == 2 and "not JSON" in proc.stderr
