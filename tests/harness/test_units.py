"""Unit tests of the harness's pure parts: matching, references, id prefixes, command parsing,
scenario loading, replay normalization."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.harness import refs
from sidecar.harness.board import AmbiguousId, Board
from sidecar.harness.commands import parse_value, split_args
from sidecar.harness.matching import matches, mismatches, pattern_problems, render_diff
from sidecar.harness.replay import IdMap, normalize, status_sequences
from sidecar.harness.scenario import ScenarioError, load

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3).filter(lambda k: not k.startswith("$")), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_every_value_matches_itself(value) -> None:
    assert matches(value, value)


@given(st.dictionaries(st.text(max_size=3).filter(lambda k: not k.startswith("$")), json_values, max_size=4), st.data())
def test_any_subset_of_an_object_matches_it(actual, data) -> None:
    keys = data.draw(st.lists(st.sampled_from(sorted(actual)), unique=True) if actual else st.just([]))
    assert matches({k: actual[k] for k in keys}, actual)


def test_mismatches_name_the_path() -> None:
    actual = {"task": {"status": "RUNNING", "progress": 40, "tags": ["a", "b"]}}
    assert mismatches({"task": {"status": "COMPLETED"}}, actual) == ['task.status: expected "COMPLETED", got "RUNNING"']
    assert mismatches({"task": {"tags": ["a"]}}, actual) == ["task.tags: expected 1 items, got 2"]
    assert mismatches({"task": {"nope": 1}}, actual) == ["task.nope: missing (expected 1)"]
    assert mismatches({"task": {"progress": {"$gte": 50}}}, actual) == ["task.progress: expected $gte 50, got 40"]
    assert mismatches(True, 1) == ["(top): expected true, got 1"]  # booleans are not numbers
    assert matches(1, 1.0)


def test_operators() -> None:
    assert matches({"$regex": "^step \\d"}, "step 3/10")
    assert matches({"$contains": {"type": "demo.sleep"}}, [{"type": "demo.noop"}, {"type": "demo.sleep", "x": 1}])
    assert matches({"$contains": "410"}, "HTTP 410: gone")
    assert matches({"$in": ["FAILED", "CANCELLED"]}, "CANCELLED")
    assert matches({"$len": 2}, [1, 2]) and not matches({"$len": 2}, [1])
    assert matches({"x": {"$absent": True}}, {}) and not matches({"x": {"$absent": True}}, {"x": None})
    assert matches({"x": {"$any": True}}, {"x": None}) and not matches({"x": {"$any": True}}, {})
    assert matches({"$not": None}, "text") and not matches({"$not": None}, None)
    assert matches({"$gt": 0, "$lt": 100}, 50) and not matches({"$gt": 0}, "50")


def test_render_diff_shows_only_the_keys_that_were_expected() -> None:
    text = render_diff({"status": "COMPLETED"}, {"status": "FAILED", "details": {"big": "x" * 500}})
    assert 'status: expected "COMPLETED", got "FAILED"' in text
    assert '-  "status": "COMPLETED"' in text and '+  "status": "FAILED"' in text
    assert "big" not in text


def test_references() -> None:
    saved = {"t": {"id": "abc", "tasks": [{"id": "x1"}, {"id": "x2"}]}, "n": 3}
    assert refs.substitute({"id": "${t.id}", "n": "${n}", "s": "n=${n} id=${t.tasks.1.id}"}, saved) == {"id": "abc", "n": 3, "s": "n=3 id=x2"}
    assert refs.task_id("t", saved) == "abc"
    assert refs.task_id("${t.tasks.0.id}", saved) == "x1"
    assert refs.task_id("literal-id", saved) == "literal-id"
    with pytest.raises(refs.RefError, match=r"\$\{t.nope\} does not exist"):
        refs.substitute("${t.nope}", saved)
    with pytest.raises(refs.RefError, match="unknown reference"):
        refs.substitute("${zzz.id}", saved)


def test_id_prefixes_resolve_when_unique() -> None:
    board = Board()
    for task_id in ("abc111", "abc222", "def333"):
        board.on_result({"id": task_id, "type": "demo.noop", "status": "QUEUED", "version": 1})
    assert board.resolve("d") == "def333"
    assert board.resolve("abc1") == "abc111"
    assert board.resolve("zzz") == "zzz"  # unknown: passed through, the sidecar answers -32001
    with pytest.raises(AmbiguousId, match="ambiguous"):
        board.resolve("abc")


def test_board_keeps_the_newest_version_and_detects_seq_gaps() -> None:
    board = Board()
    task = {"id": "t1", "type": "demo.noop", "status": "RUNNING", "version": 3}
    board.on_notification("task.updated", {"seq": 1, "task": task})
    board.on_result({**task, "status": "QUEUED", "version": 2})  # an older answer arriving late
    assert board.get("t1")["status"] == "RUNNING"
    board.on_notification("task.updated", {"seq": 3, "task": {**task, "status": "COMPLETED", "version": 5}})
    assert board.gaps == [(2, 3)]
    assert board.status_history["t1"] == ["RUNNING", "COMPLETED"]


def test_command_arguments() -> None:
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[1,2]") == [1, 2] and parse_value("hello") == "hello" and parse_value('"3"') == "3"
    assert split_args(["demo.sleep", "seconds=3", "--priority=5", "--flag"]) == (
        ["demo.sleep"], {"seconds": "3"}, {"priority": "5", "flag": "true"}
    )


def test_scenario_loading(tmp_path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nsteps:\n  - request: system.ping\n\n  - sleep: 0.1\n")
    scenario = load(str(y))
    assert scenario.name == "x" and [s.line for s in scenario.steps] == [3, 5]
    y.write_text("- request: system.ping\n- await: {task: t}\n")  # a bare list is fine too
    assert [s.kind for s in load(str(y)).steps] == ["request", "await"]
    j = tmp_path / "s.jsonl"
    j.write_text('# comment\n{"request": "system.ping"}\n\n{"sleep": 0}\n')
    assert [s.line for s in load(str(j)).steps] == [2, 4]
    j.write_text('{"request": "system.ping"}\n{nope}\n')
    with pytest.raises(ScenarioError, match=r"s.jsonl:2: not JSON"):
        load(str(j))
    y.write_text("steps:\n  - {}\n")
    with pytest.raises(ScenarioError, match="exactly one of"):
        load(str(y))


@pytest.mark.parametrize(
    "step, message",
    [
        ("- request: system.ping\n  expct: {result: pong}", "unknown key 'expct' in a request step (valid: allow_error, expect, name, params, request, save, timeout_s)"),
        ("- request: system.ping\n  expect: {reslt: pong}", "unknown key 'reslt' in expect (valid: error, response, result)"),
        ("- check: {seq_contiguos: true}", "unknown key 'seq_contiguos' in check (valid: all_terminal, history, seq_contiguous, task, within_s)"),
        ("- check: {bogus: true}", "unknown key 'bogus' in check"),
        ("- check: {}", "check needs history:, seq_contiguous: or all_terminal:"),
        ("- check: {history: [QUEUED]}", "check: task: and history: go together"),
        ("- request: system.ping\n  expect: {result: {$foo: 1}}", "expect.result: unknown operator $foo (valid: $absent, $any,"),
        ("- request: x\n  expect: {result: {a: {$regex: x, b: 1}}}", "expect.result.a: operators ($regex) mixed with plain keys (b)"),
        ("- request: x\n  expect: {result: {a: {$gt: five}}}", "expect.result.a: $gt needs a number"),
        ("- await: {notification: task.updated, match: {task: {$not: {$lenn: 1}}}}", "await.match.task: unknown operator $lenn"),
        ("- await: {notificaton: task.updated}", "await needs exactly one of task: or notification: (got notificaton)"),
        ("- await: {within_s: 1}", "await needs exactly one of task: or notification:"),
        ("- await: {task: t, status: DONE, within: 1}", "unknown key 'within' in await task:"),
        ("- sleep: abc", 'sleep must be a number of seconds, got "abc"'),
        ("- request: x\n  timeout_s: soon", "timeout_s must be a number of seconds"),
    ],
)
def test_scenario_keys_are_checked_when_loading(tmp_path, step: str, message: str) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("steps:\n  - request: system.ping\n" + "".join("  " + line + "\n" for line in step.splitlines()))
    with pytest.raises(ScenarioError) as info:
        load(str(y))
    assert f"s.yaml:3: {message}" in str(info.value)
    j = tmp_path / "s.jsonl"
    j.write_text("# the same in JSON lines\n" + json.dumps(yaml.safe_load(step)[0]) + "\n")
    with pytest.raises(ScenarioError, match=r"s\.jsonl:2: "):
        load(str(j))
    y.write_text("nmae: typo\nsteps: []\n")
    with pytest.raises(ScenarioError, match="unknown key 'nmae' in the scenario"):
        load(str(y))


def test_a_dollar_key_is_matched_literally_when_doubled() -> None:
    doc = {"allOf": [{"$ref": "#/components/schemas/Task"}]}
    assert matches({"allOf": [{"$$ref": "#/components/schemas/Task"}]}, doc)
    assert mismatches({"allOf": [{"$$ref": "#/x"}]}, doc) == ['allOf[0].$ref: expected "#/x", got "#/components/schemas/Task"']
    assert pattern_problems({"allOf": [{"$$ref": "x"}]}) == []
    assert pattern_problems({"a": {"$in": [{"$bad": 1}]}}, "expect.result")[0].startswith("expect.result.a: unknown operator $bad")


def test_replay_maps_ids_and_ignores_what_differs_between_runs() -> None:
    old = {"id": "11111111-1111-1111-1111-111111111111", "parentId": None, "status": "COMPLETED", "createdAt": 1, "version": 4}
    new = {"id": "22222222-2222-2222-2222-222222222222", "parentId": None, "status": "COMPLETED", "createdAt": 9, "version": 5}
    ids = IdMap()
    ids.learn(old, new)
    assert ids.to_new({"id": old["id"], "note": f"see {old['id']}"}) == {"id": new["id"], "note": f"see {new['id']}"}
    assert normalize(ids.to_old(new)) == normalize(old)
    running = {"id": "x", "type": "demo.sleep", "status": "RUNNING", "progress": 40, "message": "step 4"}
    assert normalize(running) == normalize({**running, "progress": 60, "message": "step 6"})
    notes = [("task.updated", {"seq": i, "task": {"id": "a", "status": s}}) for i, s in enumerate(["QUEUED", "RUNNING", "RUNNING", "COMPLETED"])]
    assert status_sequences(notes + [("sidecar.ready", {})]) == {"a": ["QUEUED", "RUNNING", "COMPLETED"]}
    assert json.dumps(normalize({"pid": 1, "dbPath": "/x", "version": "0.1.0"})) == "{}"


def test_wait_after_a_retry_waits_for_the_new_run_not_the_old_ending() -> None:
    from types import SimpleNamespace

    from sidecar.harness.commands import Commands, this_run

    board = Board()
    client = SimpleNamespace(board=board, alive=True, call=lambda *a, **k: None)
    commands = Commands(client)  # type: ignore[arg-type]
    for version, status in enumerate(["QUEUED", "RUNNING", "CANCELLED", "QUEUED", "RUNNING"], start=1):
        board.on_result({"id": "t1", "type": "demo.sleep", "status": status, "version": version})
    assert this_run(board.status_history["t1"]) == ["QUEUED", "RUNNING"]
    shown = commands.execute("wait t1 --timeout=0.2")
    assert "still RUNNING" in str(shown[0])  # the CANCELLED before the retry does not count
    assert "RUNNING" in str(commands.execute("wait t1 RUNNING --timeout=0.2")[0])
    board.on_result({"id": "t1", "type": "demo.sleep", "status": "COMPLETED", "version": 6})
    assert "still" not in str(commands.execute("wait t1 --timeout=0.2")[0])
