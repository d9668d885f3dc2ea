"""Hostile input on the stdio protocol: every line gets a valid JSON-RPC answer (or, for a blank line
or a notification, none), the right id, never an internal error, the process never dies, and the
database stays consistent afterwards.

Property-based (hypothesis) over one long-lived sidecar; deterministic sweeps for "wrong type in
every param of every method" and "unknown field in every method", enumerated from ``rpc.discover``.
The bugs this suite found (deep nesting silencing the writer, a far-future runAt stopping the engine,
olderThanMs beyond int64) were fixed in 86869a3; their tests at the bottom are regression tests now.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.reliability.common import consistency_problems, record, scaled
from tests.sidecar_client import SidecarProcess

MAX_LINE = 1 << 20  # the fuzzed sidecar's --max-message-bytes (1 MiB), so over-long lines stay cheap
APP_CODES = {-32001, -32002, -32003, -32004, -32006}
SETTINGS = settings(
    max_examples=scaled(60, 1500),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)

_ids = itertools.count(1)
stats = {"lines": 0, "answers": 0, "errors_by_code": {}}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db"
    process = SidecarProcess(db, "--max-message-bytes", str(MAX_LINE), "--grace-seconds", "0.5",
                             "--concurrency", "8", "--log-level", "ERROR")
    try:
        yield process
        assert process.proc.poll() is None, f"the sidecar died under fuzzing:\n{process.stderr[-3000:]}"
        assert process.call("system.ping") == "pong"
        assert "Traceback" not in process.stderr, process.stderr[-3000:]
    finally:
        code = process.stop()
    assert code == 0
    problems = consistency_problems(db)
    assert not problems, problems
    record("hostile_input", lines=stats["lines"], answers=stats["answers"],
           errors_by_code=dict(sorted(stats["errors_by_code"].items())))


@pytest.fixture(scope="module")
def methods(fuzzed: SidecarProcess) -> dict[str, dict[str, Any]]:
    doc = fuzzed.call("rpc.discover")
    return {m["name"]: m for m in doc["methods"] if m["name"] != "system.shutdown"}


# ---------------------------------------------------------------- checking answers


def check_response(message: Any, ident: Any = ...) -> dict[str, Any]:
    assert isinstance(message, dict), message
    assert message.get("jsonrpc") == "2.0", message
    assert ("result" in message) != ("error" in message), message
    assert set(message) <= {"jsonrpc", "id", "result", "error"} and "id" in message, message
    if ident is not ...:
        assert message["id"] == ident, (message, ident)
    if "error" in message:
        error = message["error"]
        assert isinstance(error.get("code"), int) and isinstance(error.get("message"), str), error
        assert set(error) <= {"code", "message", "data"}, error
        assert error["code"] != -32603, f"internal error: {error}"
        stats["errors_by_code"][str(error["code"])] = stats["errors_by_code"].get(str(error["code"]), 0) + 1
    stats["answers"] += 1
    return message


def exchange(sidecar: SidecarProcess, line: bytes, timeout: float = 20) -> list[Any]:
    """Send one raw line, then a ping; return every answer (not notification) the line produced.

    Answers without an id (parse errors, invalid requests) are written before the next line is read,
    so they precede the ping's answer; answers to writes may come later and are awaited by id.
    """
    assert b"\n" not in line
    before = len(sidecar.messages)
    sidecar.send_raw(line + b"\n")
    stats["lines"] += 1
    sentinel = f"sentinel-{next(_ids)}"
    sidecar.request("system.ping", ident=sentinel)
    sidecar.response(sentinel, timeout)
    with sidecar._cond:
        new = list(sidecar.messages[before:])
    return [m for m in new if isinstance(m, list) or ("method" not in m and m.get("id") != sentinel)]


def answer_for(sidecar: SidecarProcess, ident: Any, timeout: float = 20) -> dict[str, Any]:
    return check_response(sidecar.response(ident, timeout), ident)


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------- strategies

json_scalars = (
    st.none() | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "demo.noop", "demo.sleep", "QUEUED", "COMPLETED", "children", "fail", "00000000-0000-0000-0000-000000000000"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=15,
)


# ---------------------------------------------------------------- properties


@SETTINGS
@given(raw=st.binary(max_size=400))
def test_random_bytes_get_one_error_with_a_null_id(fuzzed: SidecarProcess, raw: bytes) -> None:
    line = raw.replace(b"\n", b" ")
    answers = exchange(fuzzed, line)
    if not line.rstrip(b"\r").strip():
        assert answers == []  # a blank line is skipped
        return
    assert len(answers) == 1, answers
    answer = answers[0]
    if isinstance(answer, list):  # random bytes that happen to be a JSON array
        for item in answer:
            check_response(item)
        return
    check_response(answer, None)
    assert answer["error"]["code"] in (-32700, -32600)


@SETTINGS
@given(prefix=st.binary(min_size=1, max_size=20), text=st.text(max_size=30))
def test_invalid_utf8_inside_a_request_is_a_parse_error(fuzzed: SidecarProcess, prefix: bytes, text: str) -> None:
    bad = prefix + b"\xff\xfe" + b"\xc3"  # never valid UTF-8
    line = b'{"jsonrpc":"2.0","id":"u","method":"tasks.create","params":{"type":"demo.noop","details":{"t":"' + \
        text.encode("utf-8", "surrogatepass").replace(b"\\", b"").replace(b'"', b"").replace(b"\n", b"") + \
        bad.replace(b"\n", b"").replace(b'"', b"").replace(b"\\", b"") + b'"}}}'
    answers = exchange(fuzzed, line)
    assert len(answers) == 1
    check_response(answers[0], None)
    assert answers[0]["error"]["code"] == -32700


@SETTINGS
@given(data=st.data())
def test_any_request_to_any_method_gets_a_valid_answer(fuzzed: SidecarProcess, methods: dict[str, dict[str, Any]],
                                                        data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([*methods, "no.such.method", "tasks.", "", "rpc.discover"]))
    declared = [p["name"] for p in methods.get(name, {}).get("params", [])]
    shape = data.draw(st.sampled_from(["declared", "declared+unknown", "any", "absent"]))
    if shape == "absent":
        params: Any = None
    elif shape == "any":
        params = data.draw(json_values)
    else:
        chosen = data.draw(st.lists(st.sampled_from(declared), unique=True)) if declared else []
        params = {k: data.draw(json_values) for k in chosen}
        if shape == "declared+unknown":
            params[data.draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in declared))] = data.draw(json_values)
    ident = data.draw(st.sampled_from([f"r-{next(_ids)}", next(_ids), -next(_ids), float(next(_ids)) + 0.5]))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": name}
    if params is not None:
        message["params"] = params
    line = dumps(message)
    if params is not None and not isinstance(params, (dict, list)):
        # structurally invalid (params must be structured): answered at once, with its id
        answers = exchange(fuzzed, line)
        assert len(answers) == 1 and answers[0]["id"] == ident, answers
        check_response(answers[0], ident)
        assert answers[0]["error"]["code"] == -32600
        return
    fuzzed.send_raw(line + b"\n")
    stats["lines"] += 1
    answer = answer_for(fuzzed, ident)
    if "error" in answer:
        code = answer["error"]["code"]
        if name not in methods and name != "rpc.discover":  # (rpc.discover is not in its own document)
            assert code == -32601
        elif name == "rpc.discover":
            assert code == -32602, answer
        else:
            assert code == -32602 or code in APP_CODES, answer
            if code == -32602:
                assert isinstance(answer["error"]["data"]["field"], str)


@settings(SETTINGS, max_examples=scaled(4, 40))
@given(size=st.integers(min_value=1000, max_value=5000), seed=st.integers(0, 2**32))
def test_batches_of_thousands_are_answered_item_by_item(fuzzed: SidecarProcess, size: int, seed: int) -> None:
    rng = random.Random(seed)
    batch: list[Any] = []
    expected: list[Any] = []
    for i in range(size):
        kind = rng.random()
        ident = f"b{seed}-{i}"
        if kind < 0.4:
            batch.append({"jsonrpc": "2.0", "id": ident, "method": "system.ping"})
            expected.append(ident)
        elif kind < 0.5:
            batch.append({"jsonrpc": "2.0", "id": ident, "method": "tasks.create", "params": {"type": "demo.noop"}})
            expected.append(ident)
        elif kind < 0.6:
            batch.append({"jsonrpc": "2.0", "id": ident, "method": "tasks.get", "params": {"id": ident}})
            expected.append(ident)
        elif kind < 0.7:
            batch.append({"jsonrpc": "2.0", "id": ident, "method": "no.such"})
            expected.append(ident)
        elif kind < 0.8:
            batch.append({"jsonrpc": "2.0", "method": "system.ping"})  # a notification: no answer
        elif kind < 0.9:
            bad = rng.choice([1, "x", None, [], {"bad": True}, {"jsonrpc": "1.0", "id": ident, "method": "x"}])
            batch.append(bad)
            expected.append(bad.get("id") if isinstance(bad, dict) else None)  # a readable id is echoed
        else:
            batch.append({"jsonrpc": "2.0", "id": ident, "method": "tasks.list", "params": {"limit": rng.choice([0, 1, 5000, "1"])}})
            expected.append(ident)
    line = dumps(batch)
    assert len(line) <= MAX_LINE
    tag = next(i for i in expected if i is not None)
    before = len(fuzzed.messages)
    fuzzed.send_raw(line + b"\n")  # answers to writes come after their commit: wait for this batch's array
    stats["lines"] += 1
    got = fuzzed.wait_message(
        lambda m: isinstance(m, list) and any(isinstance(a, dict) and a.get("id") == tag for a in m), before, timeout=60
    )
    assert [a.get("id") for a in got] == expected
    for answer, ident in zip(got, expected):
        check_response(answer, ident)


@settings(SETTINGS, max_examples=scaled(10, 100))
@given(size=st.integers(min_value=MAX_LINE + 1, max_value=MAX_LINE * 3), valid=st.booleans())
def test_lines_over_the_limit_are_refused_unparsed(fuzzed: SidecarProcess, size: int, valid: bool) -> None:
    if valid:  # a well-formed request, just too long
        head = b'{"jsonrpc":"2.0","id":"long","method":"tasks.create","params":{"type":"demo.noop","details":{"x":"'
        line = head + b"a" * (size - len(head) - 4) + b'"}}}'
    else:
        line = b"{" * size
    answers = exchange(fuzzed, line)
    assert len(answers) == 1
    check_response(answers[0], None)
    assert answers[0]["error"]["code"] == -32600 and "exceeds the limit" in answers[0]["error"]["data"]


# ---------------------------------------------------------------- deterministic sweeps


def plausible(param: str, method: str, existing_id: str) -> Any:
    return {"id": existing_id, "type": "demo.noop", "tasks": [{"type": "demo.noop"}], "limit": 2}.get(param, None)


WRONG_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, 2**63 - 1, -(2**63), 1e300, "", "x" * 300, [], [1, "a"],
                           {}, {"a": {"b": [None]}}, "00000000-0000-0000-0000-000000000000"]


def test_every_param_of_every_method_refuses_wrong_types(fuzzed: SidecarProcess, methods: dict[str, dict[str, Any]]) -> None:
    fuzzed.call("queue.resume", {})  # the properties may have paused it
    existing = fuzzed.call("tasks.create", {"type": "demo.noop"})["id"]
    sent: list[tuple[Any, str, str, Any, bool]] = []
    for name, method in methods.items():
        required = [p["name"] for p in method["params"] if p["required"]]
        for param in method["params"]:
            validator = Draft202012Validator(param["schema"])
            for value in WRONG_VALUES:
                params = {r: plausible(r, name, existing) for r in required}
                params[param["name"]] = value
                fits = validator.is_valid(value)
                ident = f"w-{next(_ids)}"
                fuzzed.request(name, params, ident=ident)
                stats["lines"] += 1
                sent.append((ident, name, param["name"], value, fits))
    refused = 0
    for ident, name, param, value, fits in sent:
        answer = answer_for(fuzzed, ident)
        if fits:  # a value its own schema allows may still be refused for its meaning, never crash
            assert "result" in answer or answer["error"]["code"] in APP_CODES | {-32602}, (name, param, value, answer)
            continue
        assert "error" in answer, (name, param, value, answer)
        error = answer["error"]
        assert error["code"] == -32602, (name, param, value, error)
        assert error["data"]["field"].split(".")[0].split("[")[0] == param, (name, param, value, error)
        refused += 1
    accepted = len(sent) - refused
    record("hostile_wrong_type_sweep", methods=len(methods), requests=len(sent), refused_with_field=refused,
           schema_valid_values=accepted)


def test_an_unknown_field_is_refused_by_every_method(fuzzed: SidecarProcess, methods: dict[str, dict[str, Any]]) -> None:
    existing = fuzzed.call("tasks.create", {"type": "demo.noop"})["id"]
    for name, method in methods.items():
        params = {p["name"]: plausible(p["name"], name, existing) for p in method["params"] if p["required"]}
        params["zzUnknown"] = 1
        error = fuzzed.error(name, params)
        assert error.code == -32602 and error.data["field"] == "zzUnknown", (name, error)


@pytest.mark.parametrize("line, code", [
    (b'{"jsonrpc":"2.0","id":"n1","method":"tasks.create","params":{"type":"demo.noop","priority":1e400}}', -32700),
    (b'{"jsonrpc":"2.0","id":"n2","method":"tasks.list","params":{"limit":-1e400}}', -32700),
    (b'{"jsonrpc":"2.0","id":1e400,"method":"system.ping"}', -32700),
    (b'{"jsonrpc":"2.0","id":"n4","method":"system.ping","params":{"x":NaN}}', -32700),
    # (half a surrogate pair, "\\ud800", is read as U+FFFD since 9180c29: see test_bad_input.py)
    (b'[' * 100_000 + b']' * 100_000, -32700),
    (b'{"jsonrpc":"2.0","id":"deep","method":"tasks.create","params":{"type":"demo.noop","details":{"x":'
     + b'[' * 100_000 + b']' * 100_000 + b'}}}', -32700),
    (b'{"a":' * 30_000 + b'1' + b'}' * 30_000, -32700),
    (b'{"jsonrpc":"2.0","id":"n9","method":"system.ping","extra":1}', -32600),
])
def test_huge_numbers_and_deep_nesting_are_parse_errors(fuzzed: SidecarProcess, line: bytes, code: int) -> None:
    if len(line) > MAX_LINE:
        code = -32600  # over this sidecar's limit: refused before parsing, same outcome
    answers = exchange(fuzzed, line)
    assert len(answers) == 1
    check_response(answers[0], "n9" if code == -32600 and len(line) <= MAX_LINE else None)
    assert answers[0]["error"]["code"] == code


@pytest.mark.parametrize("field, value", [("priority", 2**200), ("maxAttempts", 2**64), ("runAt", -(2**70)),
                                           ("weight", 1e308), ("priority", 1e300), ("maxAttempts", 2.5)])
def test_huge_numbers_in_params_are_invalid_params(fuzzed: SidecarProcess, field: str, value: Any) -> None:
    ident = f"h-{next(_ids)}"
    fuzzed.send_raw(dumps({"jsonrpc": "2.0", "id": ident, "method": "tasks.create",
                           "params": {"type": "demo.noop", field: value}}) + b"\n")
    answer = answer_for(fuzzed, ident)
    assert answer["error"]["code"] == -32602 and answer["error"]["data"]["field"] == field


def test_moderate_nesting_and_huge_values_in_details_round_trip(fuzzed: SidecarProcess) -> None:
    deep: Any = []
    for _ in range(55):  # params nest at most 64 levels (docs/protocol.md)
        deep = [deep]
    details = {"deep": deep, "big": 2**63 - 1, "small": -(2**63), "tiny": 5e-324, "max": 1.7976931348623157e308,
               "text": "\u2028\u2029\x00 ünï 😀"}
    task = fuzzed.call("tasks.create", {"type": "demo.noop", "details": details})
    assert fuzzed.call("tasks.get", {"id": task["id"]})["details"] == details


# ---------------------------------------------------------------- regressions of fixed bugs


def _fresh(start_sidecar) -> SidecarProcess:
    return start_sidecar("--log-level", "ERROR", "--grace-seconds", "0.5")


def _answers_within(sidecar: SidecarProcess, ident: Any, seconds: float) -> dict[str, Any] | None:
    try:
        return sidecar.response(ident, seconds)
    except TimeoutError:
        return None


def test_details_nested_just_under_the_serialiser_limit_do_not_silence_the_sidecar(start_sidecar) -> None:
    """Was: stored, then the stdout-writer thread died encoding the answer; the sidecar went silent."""
    sidecar = _fresh(start_sidecar)
    try:
        line = (b'{"jsonrpc":"2.0","id":"d","method":"tasks.create","params":{"type":"demo.noop","details":{"x":'
                + b"[" * 251 + b"]" * 251 + b"}}}\n")
        sidecar.send_raw(line)
        answer = _answers_within(sidecar, "d", 5)
        assert answer is not None, "no answer to the create"
        assert "result" in answer or answer["error"]["code"] == -32602
        assert _answers_within(sidecar, sidecar.request("system.ping"), 5) is not None, "the sidecar went silent"
    finally:
        sidecar.kill()


def test_details_nested_too_deep_to_store_are_invalid_params(start_sidecar) -> None:
    """Was -32603 ("Recursion limit reached" from orjson.dumps in the engine)."""
    sidecar = _fresh(start_sidecar)
    line = (b'{"jsonrpc":"2.0","id":"d","method":"tasks.create","params":{"type":"demo.noop","details":{"x":'
            + b"[" * 300 + b"]" * 300 + b"}}}\n")
    sidecar.send_raw(line)
    answer = sidecar.response("d", 10)
    assert answer["error"]["code"] == -32602 and answer["error"]["data"]["field"].startswith("details"), answer


def test_prune_older_than_beyond_int64_is_invalid_params(start_sidecar) -> None:
    """Was -32603 (OverflowError binding it to SQLite)."""
    sidecar = _fresh(start_sidecar)
    sidecar.send_raw(b'{"jsonrpc":"2.0","id":"p","method":"tasks.prune","params":{"olderThanMs":18446744073709551615}}\n')
    answer = sidecar.response("p", 10)
    assert "result" in answer or answer["error"]["code"] == -32602, answer


def test_a_far_future_run_at_does_not_kill_the_engine(start_sidecar) -> None:
    """Was: the engine thread died (OverflowError in its queue wait); no write answered again, stdin
    EOF and the parent's death no longer stopped the process; the stored task did it again at the
    next start."""
    sidecar = _fresh(start_sidecar)
    try:
        far = sidecar.call("tasks.create", {"type": "demo.noop", "runAt": 253_402_300_799_999})
        assert far["status"] == "QUEUED"
        ident = sidecar.request("tasks.create", {"type": "demo.noop"})
        answer = _answers_within(sidecar, ident, 5)
        assert answer is not None and "result" in answer, "writes are no longer answered"
        assert sidecar.wait_status(answer["result"]["id"], "COMPLETED", timeout=5)
        sidecar.close_stdin()
        assert sidecar.wait_exit(10) == 0
    finally:
        if sidecar.proc.poll() is None:
            sidecar.kill()


@pytest.mark.parametrize("depth, ok", [(60, True), (70, False), (300, False)])
def test_params_nesting_limit_names_the_spot(fuzzed: SidecarProcess, depth: int, ok: bool) -> None:
    deep: Any = 1
    for _ in range(depth):
        deep = [deep]
    ident = f"nest-{next(_ids)}"
    fuzzed.send_raw(dumps({"jsonrpc": "2.0", "id": ident, "method": "tasks.create",
                           "params": {"type": "demo.noop", "details": {"x": deep}}}) + b"\n")
    answer = answer_for(fuzzed, ident)
    if ok:
        assert "result" in answer, answer
    else:
        assert answer["error"]["code"] == -32602 and answer["error"]["data"]["field"].startswith("details.x"), answer
