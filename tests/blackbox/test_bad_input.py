"""Bad input gets a clear JSON-RPC error and the sidecar keeps serving."""

from __future__ import annotations

import sqlite3

import orjson
import pytest

from tests.sidecar_client import SidecarProcess


def answer_to(sidecar: SidecarProcess, raw: bytes) -> dict:
    before = len(sidecar.messages)
    sidecar.send_raw(raw)
    sidecar.call("system.ping")  # the sidecar kept serving, and answered the bad line first
    return next(m for m in sidecar.messages[before:]
                if not (isinstance(m, dict) and (m.get("result") == "pong" or "method" in m)))  # notifications


@pytest.mark.parametrize(
    "raw, code, ident, reason",
    [
        (b"not json\n", -32700, None, None),
        (b"{\"jsonrpc\": \"2.0\", \"id\": 1, \n", -32700, None, None),
        (b"\xff\xfe\xfa invalid utf-8\n", -32700, None, None),
        (b"[]\n", -32600, None, "empty batch"),
        (b"42\n", -32600, None, "a request must be a JSON object"),
        (b'{"id": 901, "method": "system.ping"}\n', -32600, 901, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "1.0", "id": "a", "method": "system.ping"}\n', -32600, "a", '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "2.0", "id": 902, "method": 5}\n', -32600, 902, '"method" must be a string'),
        (b'{"jsonrpc": "2.0", "id": 903, "method": "system.ping", "params": null}\n', -32600, 903,
         '"params" must be an object or an array'),
        (b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "system.ping"}\n', -32600, None,
         '"id" must be a string, a number or null'),
        (b'{"jsonrpc": "2.0", "id": true, "method": "system.ping"}\n', -32600, None,
         '"id" must be a string, a number or null'),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "system.ping", "extra": true}\n', -32600, 1.5,
         'unknown member "extra"'),
    ],
)
def test_malformed_messages(sidecar: SidecarProcess, raw: bytes, code: int, ident, reason) -> None:
    # an invalid request whose id can be made out is answered with it, so its caller settles
    answer = answer_to(sidecar, raw)
    assert answer["error"]["code"] == code and answer["id"] == ident and type(answer["id"]) is type(ident)
    if reason is not None:
        assert answer["error"]["data"] == reason


def test_unknown_method_names_it(sidecar: SidecarProcess) -> None:
    err = sidecar.error("tasks.explode", {})
    assert err.code == -32601 and err.data == "tasks.explode"


@pytest.mark.parametrize(
    "method, params, field",
    [
        ("tasks.create", {}, "type"),
        ("tasks.create", {"type": 5}, "type"),
        ("tasks.create", {"type": "demo.sleep", "details": {"seconds": "x"}}, "details.seconds"),
        ("tasks.create", {"type": "demo.sleep", "details": {"seconds": -1}}, "details.seconds"),
        ("tasks.create", {"type": "demo.sleep", "details": {"stepz": 1}}, "details.stepz"),
        ("tasks.create", {"type": "demo.sleep", "details": []}, "details"),
        ("tasks.create", {"type": "demo.noop", "priority": 1.5}, "priority"),
        ("tasks.create", {"type": "demo.noop", "maxAttempts": 0}, "maxAttempts"),
        ("tasks.create", {"type": "demo.noop", "bogus": 1}, "bogus"),
        ("tasks.create", {"type": "demo.noop", "parentId": "no-such-task"}, "parentId"),
        ("tasks.createMany", {"tasks": []}, "tasks"),
        ("tasks.createMany", {"tasks": [{"type": "demo.noop"}, {"type": "demo.fail", "details": {"retryable": "yes"}}]},
         "tasks[1].details.retryable"),
        ("tasks.get", {}, "id"),
        ("tasks.get", {"id": 7}, "id"),
        ("tasks.list", {"limit": "10"}, "limit"),
        ("tasks.prune", {"statuses": ["RUNNING"]}, "statuses[0]"),
        ("tasks.get", ["positional"], "params"),
    ],
)
def test_invalid_params_name_the_field(sidecar: SidecarProcess, method: str, params, field: str) -> None:
    err = sidecar.error(method, params)
    assert err.code == -32602, err
    assert err.data["field"] == field
    assert field in err.message
    assert sidecar.call("tasks.stats")["total"] == 0  # nothing reached the store


def test_unknown_task_type(sidecar: SidecarProcess) -> None:
    err = sidecar.error("tasks.create", {"type": "no.such.type"})
    assert err.code == -32003 and err.data["type"] == "no.such.type"


@pytest.mark.parametrize("method", ["tasks.get", "tasks.cancel", "tasks.retry", "tasks.delete"])
@pytest.mark.parametrize("task_id", ["00000000-0000-0000-0000-000000000000", "not-even-a-uuid"])
def test_task_not_found(sidecar: SidecarProcess, method: str, task_id: str) -> None:
    err = sidecar.error(method, {"id": task_id})
    assert err.code == -32001 and err.data == {"id": task_id}


def test_a_line_over_the_limit_is_refused_unparsed(start_sidecar) -> None:
    sidecar = start_sidecar("--max-message-bytes", "1000")
    answer = answer_to(sidecar, b'{"jsonrpc":"2.0","id":1,"method":"system.ping","params":{"x":"' + b"a" * 5000 + b'"}}\n')
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    assert "exceeds the limit" in answer["error"]["data"]


def test_batches_are_answered_item_by_item(sidecar: SidecarProcess) -> None:
    before = len(sidecar.messages)
    sidecar.send([
        {"jsonrpc": "2.0", "id": "a", "method": "system.ping"},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        {"bad": True},
        {"jsonrpc": "2.0", "method": "system.ping"},  # a notification: no answer
        {"jsonrpc": "2.0", "id": "c", "method": "tasks.create", "params": {"type": "demo.noop"}},
    ])
    batch = sidecar.wait_message(lambda m: isinstance(m, list), before)
    assert [m.get("id") for m in batch] == ["a", "b", None, "c"]  # {"bad": true} has no id
    assert batch[0]["result"] == "pong"
    assert batch[1]["error"]["code"] == -32601
    assert batch[2]["error"]["code"] == -32600
    assert batch[3]["result"]["status"] == "QUEUED"


def test_a_batch_whose_writes_fail_in_the_engine_answers_each_in_order(sidecar: SidecarProcess) -> None:
    """Writes are answered once their transaction commits; one refused inside it (an unknown id,
    found only by the engine) is answered with its own error and undoes nothing of the others."""
    before = len(sidecar.messages)
    missing = "00000000-0000-4000-8000-000000000000"
    sidecar.send([
        {"jsonrpc": "2.0", "id": 1, "method": "tasks.create", "params": {"type": "demo.noop"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tasks.cancel", "params": {"id": missing}},
        {"jsonrpc": "2.0", "id": 3, "method": "system.ping"},
        {"jsonrpc": "2.0", "id": 4, "method": "tasks.create", "params": {"type": "demo.noop"}},
    ])
    batch = sidecar.wait_message(lambda m: isinstance(m, list), before)
    assert [m["id"] for m in batch] == [1, 2, 3, 4]
    assert batch[1]["error"]["code"] == -32001 and missing in batch[1]["error"]["message"]
    assert batch[2]["result"] == "pong"
    created = [batch[0]["result"]["id"], batch[3]["result"]["id"]]
    for task_id in created:
        assert sidecar.call("tasks.get", {"id": task_id})["id"] == task_id


def test_a_batch_over_ten_thousand_is_one_error(sidecar: SidecarProcess) -> None:
    answer = answer_to(sidecar, orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": "system.ping"} for i in range(10_001)]) + b"\n")
    assert answer["error"]["code"] == -32600


def test_a_batch_of_ten_thousand_is_answered(sidecar: SidecarProcess) -> None:
    before = len(sidecar.messages)
    sidecar.send([{"jsonrpc": "2.0", "id": i, "method": "system.ping"} for i in range(10_000)])
    batch = sidecar.wait_message(lambda m: isinstance(m, list), before, timeout=30)
    assert len(batch) == 10_000 and {m["result"] for m in batch} == {"pong"}


def test_notifications_are_executed_but_never_answered(sidecar: SidecarProcess) -> None:
    sidecar.send({"jsonrpc": "2.0", "method": "tasks.create", "params": {"type": "demo.noop"}})
    sidecar.send({"jsonrpc": "2.0", "method": "no.such.method"})
    assert sidecar.call("system.ping") == "pong"
    created = sidecar.wait_notification(lambda m: m["method"] == "task.updated")
    assert created["params"]["task"]["type"] == "demo.noop"
    assert all("id" not in m or m.get("result") == "pong" for m in sidecar.messages if isinstance(m, dict) and "method" not in m)


def test_unicode_round_trips(sidecar: SidecarProcess) -> None:
    task = sidecar.call("tasks.create", {"type": "demo.noop", "details": {"title": "ünïcødé ✓ 😀 \u2028"}})
    assert sidecar.call("tasks.get", {"id": task["id"]})["details"]["title"] == "ünïcødé ✓ 😀 \u2028"


def test_crlf_line_endings_are_accepted(sidecar: SidecarProcess) -> None:
    sidecar.send_raw(b'{"jsonrpc":"2.0","id":"crlf","method":"system.ping"}\r\n')
    assert sidecar.response("crlf")["result"] == "pong"


def test_whole_floats_are_taken_as_the_integers_they_are(start_sidecar) -> None:
    # JSON Schema counts 3.0 as an integer, so the params checks let it through; the sidecar used
    # to keep it a float: a limit of 3.0 crashed the engine's effects (tasks claimed in the same
    # commit stayed RUNNING with no handler), was stored, and failed every later start; a list
    # limit of 2.0 was an internal error.
    sidecar = start_sidecar()
    sidecar.call("queue.pause", {})
    tasks = [sidecar.call("tasks.create", {"type": "demo.noop", "priority": 5.0, "runAt": 1.0})
             for _ in range(3)]
    assert all(type(t["priority"]) is int and t["priority"] == 5 and type(t["runAt"]) is int for t in tasks)
    sidecar.send_raw(orjson.dumps([
        {"jsonrpc": "2.0", "id": "r", "method": "queue.resume", "params": {}},
        {"jsonrpc": "2.0", "id": "c", "method": "queue.setConcurrency", "params": {"limit": 3.0}},
    ]) + b"\n")
    for task in tasks:
        sidecar.wait_status(task["id"], "COMPLETED", timeout=10)
    status = sidecar.call("queue.status", {})
    assert type(status["concurrency"]) is int and status["concurrency"] == 3
    page = sidecar.call("tasks.list", {"limit": 2.0})
    assert len(page["tasks"]) == 2
    assert sidecar.stop() == 0
    again = start_sidecar()  # the limit was stored as an integer: the next start serves
    assert again.call("queue.status", {})["concurrency"] == 3
    task = again.call("tasks.create", {"type": "demo.noop"})
    again.wait_status(task["id"], "COMPLETED", timeout=10)


def test_a_float_limit_stored_by_an_older_sidecar_does_not_stop_it_starting(start_sidecar, db_path) -> None:
    first = start_sidecar()
    first.call("queue.setConcurrency", {"limit": 3})
    assert first.stop() == 0
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE settings SET value = ? WHERE key = 'queue'",
                     ('{"paused":false,"pausedTypes":[],"concurrency":3.0,"typeConcurrency":{"demo.noop":2.0}}',))
    conn.close()
    again = start_sidecar()
    status = again.call("queue.status", {})
    assert status["concurrency"] == 3 and status["typeConcurrency"] == {"demo.noop": 2}
    task = again.call("tasks.create", {"type": "demo.noop"})
    again.wait_status(task["id"], "COMPLETED", timeout=10)


def test_half_a_surrogate_pair_is_read_as_a_replacement_character(sidecar: SidecarProcess) -> None:
    # JSON.stringify("🎵 title".slice(0, 1)) is "\ud83c": valid JSON that orjson refuses; the call
    # got a parse error without its id, so the app's promise never settled
    line = (b'{"jsonrpc":"2.0","id":41,"method":"tasks.create","params":{"type":"demo.noop",'
            b'"details":{"title":"\\ud83c","ok":"\\ud83c\\udfb5 x"}}}\n')
    sidecar.send_raw(line)
    answer = sidecar.response(41)
    assert answer["result"]["details"] == {"title": "\ufffd", "ok": "\U0001f3b5 x"}
    assert sidecar.call("tasks.get", {"id": answer["result"]["id"]})["details"]["title"] == "\ufffd"
    # a surrogate encoded as UTF-8 bytes is still not UTF-8, and NaN still not JSON
    assert answer_to(sidecar, b'{"jsonrpc":"2.0","id":43,"method":"system.ping","x":"\xed\xa0\x80"}\n')[
        "error"]["code"] == -32700
    assert answer_to(sidecar, b'{"jsonrpc":"2.0","id":42,"method":"system.ping","x":"\\ud83c","n":NaN}\n')[
        "error"]["code"] == -32700


@pytest.mark.parametrize("method, params, reason", [
    ("tasks.list", {"parentId": None}, "parentId: must be a string, not null"),
    ("tasks.list", {"limit": "3"}, "limit: must be an integer, not a string"),
    ("tasks.list", {"status": ["DONE"]}, 'status[0]: must be one of ["QUEUED","WAITING","RUNNING","PAUSED",'),
    ("tasks.list", {"limit": 0}, "limit: must be >= 1"),
    ("tasks.create", {"type": "demo.sleep", "details": {"seconds": -1}}, "details.seconds: must be >= 0"),
    ("tasks.get", {"id": ""}, "id: must not be empty"),
])
def test_a_wrong_type_is_named_in_json_words_not_pythons(sidecar: SidecarProcess, method, params, reason) -> None:
    err = sidecar.error(method, params)
    assert err.code == -32602 and err.message.startswith(f"Invalid params: {reason}")
    assert "None" not in err.message and "'" not in err.message


GOOD_2020_12 = {"clip": {"url": "https://example.invalid/v/1"}, "range": [0, 30], "tags": ["music", "live", "music"],
                "start": 1, "end": 2}


@pytest.mark.parametrize("details, field", [
    ({"clip": {}}, "details.clip.url"),  # required by the $ref, beside the clip's own properties
    ({"clip": {"url": 7}}, "details.clip.url"),  # the assertion beside the $ref
    ({"range": ["0", 30]}, "details.range[0]"),  # prefixItems
    ({"range": [0, 30, 60]}, "details.range"),  # items: false after the prefix
    ({"tags": ["music", "live"]}, "details.tags"),  # minContains
    ({"start": 1}, "details.end"),  # dependentRequired
    ({"stray": 1}, "details"),  # unevaluatedProperties
])
def test_a_handlers_schema_is_read_as_json_schema_2020_12(start_sidecar, details, field) -> None:
    # A draft-07 checker ignores prefixItems, minContains, dependentRequired and
    # unevaluatedProperties, and the assertions beside a $ref: each of these details would be stored.
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    err = sidecar.error("tasks.create", {"type": "test.schema_2020_12", "details": details})
    assert err.code == -32602 and err.data["field"] == field, err
    assert sidecar.call("tasks.stats")["total"] == 0
    task = sidecar.call("tasks.create", {"type": "test.schema_2020_12", "details": GOOD_2020_12})
    assert sidecar.wait_status(task["id"], "COMPLETED")["result"] == {"details": GOOD_2020_12}
