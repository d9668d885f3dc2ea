"""Scenario files: loading (YAML or JSON lines) and running them against a Client.

See docs/harness.md for the format. A scenario is a list of steps; each step is a mapping with one
of the keys ``request``, ``notify``, ``raw``, ``await``, ``sleep``, ``check``.

Loading checks every key of the file: a misspelt key (``expct:``, ``seq_contiguos:``) or operator
(``$regx``) would otherwise be ignored and the step pass without checking anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from sidecar.harness import refs
from sidecar.harness.board import TERMINAL
from sidecar.harness.client import Client
from sidecar.harness.matching import matches, mismatches, pattern_problems, render_diff

STEP_KINDS = ("request", "notify", "raw", "await", "sleep", "check")
# the keys each kind of step may have besides its own and ``name``
STEP_KEYS: dict[str, set[str]] = {
    "request": {"params", "save", "expect", "timeout_s", "allow_error"},
    "raw": {"save", "expect", "timeout_s", "allow_error"},
    "notify": {"params"},
    "await": set(),
    "sleep": set(),
    "check": set(),
}
AWAIT_KEYS: dict[str, set[str]] = {
    "task": {"status", "match", "within_s", "save"},
    "notification": {"match", "within_s", "save"},
}
CHECK_KEYS = {"task", "history", "seq_contiguous", "all_terminal", "within_s"}
EXPECT_KEYS = {"result", "error", "response"}
TOP_KEYS = {"name", "sidecar_args", "steps"}


class ScenarioError(ValueError):
    """The scenario file itself is wrong (not a failed expectation)."""


@dataclass
class Step:
    index: int
    line: int | None
    spec: dict[str, Any]

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if k in self.spec)

    def where(self) -> str:
        return f"step {self.index}" + (f" (line {self.line})" if self.line else "")


@dataclass
class Scenario:
    path: str
    name: str
    steps: list[Step]
    sidecar_args: list[str] = field(default_factory=list)


def load(path: str) -> Scenario:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".jsonl", ".ndjson")):
        return _load_jsonl(path, text)
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    lines: list[int | None] = []
    name = Path(path).stem
    sidecar_args: list[str] = []
    if isinstance(data, dict):
        _known_keys(path, "the scenario", data, TOP_KEYS)
        name = str(data.get("name", name))
        if not isinstance(data.get("sidecar_args", []), list):
            raise ScenarioError(f"{path}: sidecar_args must be a list of arguments")
        sidecar_args = [str(a) for a in data.get("sidecar_args", [])]
        steps = data.get("steps")
        steps_node = next((v for k, v in root.value if k.value == "steps"), None) if root is not None else None
    else:
        steps, steps_node = data, root
    if not isinstance(steps, list):
        raise ScenarioError(f"{path}: expected a list of steps (or a mapping with 'steps:')")
    if steps_node is not None and isinstance(steps_node, yaml.SequenceNode):
        lines = [item.start_mark.line + 1 for item in steps_node.value]
    return Scenario(path, name, _steps(path, steps, lines), sidecar_args)


def _load_jsonl(path: str, text: str) -> Scenario:
    steps, lines = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{path}:{lineno}: not JSON: {exc}") from None
        lines.append(lineno)
    return Scenario(path, Path(path).stem, _steps(path, steps, lines))


def _steps(path: str, raw_steps: list[Any], lines: list[int | None]) -> list[Step]:
    steps = []
    for i, spec in enumerate(raw_steps, 1):
        line = lines[i - 1] if i - 1 < len(lines) else None
        at = f"{path}:{line}" if line else f"{path} step {i}"
        if not isinstance(spec, dict):
            raise ScenarioError(f"{at}: a step must be a mapping, got {spec!r}")
        kinds = [k for k in STEP_KINDS if k in spec]
        if len(kinds) != 1:
            raise ScenarioError(f"{at}: a step needs exactly one of {', '.join(STEP_KINDS)} (got {', '.join(map(str, spec)) or 'nothing'})")
        _check_step(at, kinds[0], spec)
        steps.append(Step(i, line, spec))
    return steps


def _known_keys(at: str, what: str, mapping: dict[Any, Any], valid: set[str]) -> None:
    unknown = [str(k) for k in mapping if k not in valid]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ScenarioError(f"{at}: unknown key{plural} {', '.join(map(repr, unknown))} in {what} (valid: {', '.join(sorted(valid))})")


def _number(at: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ScenarioError(f"{at}: {key} must be a number of seconds, got {json.dumps(value)}")


def _pattern(at: str, key: str, value: Any) -> None:
    problems = pattern_problems(value, key)
    if problems:
        raise ScenarioError(f"{at}: " + "; ".join(problems))


def _check_step(at: str, kind: str, spec: dict[str, Any]) -> None:
    """Every key of a step is one its kind knows, with a value of the right shape (see docs/harness.md)."""
    _known_keys(at, f"a {kind} step", spec, {kind, "name"} | STEP_KEYS[kind])
    if "timeout_s" in spec:
        _number(at, "timeout_s", spec["timeout_s"])
    if "expect" in spec:
        expect = spec["expect"]
        if not isinstance(expect, dict) or not expect:
            raise ScenarioError(f"{at}: expect must be a mapping with result:, error: and/or response:")
        _known_keys(at, "expect", expect, EXPECT_KEYS)
        error = expect.get("error", {})
        if isinstance(error, bool) or not isinstance(error, (int, dict)):
            raise ScenarioError(f"{at}: expect: error: must be a code (-32001) or a mapping ({{code: ..., message: ...}})")
        for key in ("result", "error", "response"):
            if key in expect:
                _pattern(at, f"expect.{key}", expect[key])
    if kind == "sleep":
        _number(at, "sleep", spec["sleep"])
    elif kind == "await":
        a = spec["await"]
        if not isinstance(a, dict):
            raise ScenarioError(f"{at}: await needs a mapping ({{task: ..., status: ...}} or {{notification: ...}})")
        forms = [k for k in AWAIT_KEYS if k in a]
        if len(forms) != 1:
            raise ScenarioError(f"{at}: await needs exactly one of task: or notification: (got {', '.join(map(str, a)) or 'nothing'})")
        _known_keys(at, f"await {forms[0]}:", a, {forms[0]} | AWAIT_KEYS[forms[0]])
        if "within_s" in a:
            _number(at, "within_s", a["within_s"])
        status = a.get("status")
        if status is not None and not isinstance(status, str) and not (
            isinstance(status, list) and status and all(isinstance(x, str) for x in status)
        ):
            raise ScenarioError(f"{at}: await status must be a status or a list of them, got {json.dumps(status)}")
        if "match" in a:
            _pattern(at, "await.match", a["match"])
    elif kind == "check":
        c = spec["check"]
        if not isinstance(c, dict):
            raise ScenarioError(f"{at}: check needs a mapping ({{task: ..., history: [...]}}, {{seq_contiguous: true}} or {{all_terminal: true}})")
        _known_keys(at, "check", c, CHECK_KEYS)
        if not any(k in c for k in ("history", "seq_contiguous", "all_terminal")):
            raise ScenarioError(f"{at}: check needs history:, seq_contiguous: or all_terminal:")
        if ("history" in c) != ("task" in c):
            raise ScenarioError(f"{at}: check: task: and history: go together")
        if "history" in c and not isinstance(c["history"], list):
            raise ScenarioError(f"{at}: check history: must be a list of statuses")
        if "within_s" in c:
            _number(at, "within_s", c["within_s"])


class StepFailed(AssertionError):
    pass


@dataclass
class Outcome:
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    # a step failed because the sidecar had died: the run is over (exit 3, not a failed check)
    sidecar_died: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed


class Runner:
    """Runs steps in order; ``out`` receives one line (or block) of report text at a time."""

    def __init__(self, client: Client, out: Callable[[str], None], keep_going: bool = False):
        self.client = client
        self.out = out
        self.keep_going = keep_going
        self.saved: dict[str, Any] = {}
        # per task: how much of its status history earlier awaits used up, so that awaiting
        # CANCELLED again after a retry waits for the new CANCELLED, not the old one
        self._await_pos: dict[str, int] = {}

    def run(self, scenario: Scenario) -> Outcome:
        outcome = Outcome()
        n = len(scenario.steps)
        self.out(f"scenario {scenario.name} ({scenario.path}): {n} step{'' if n == 1 else 's'}")
        for step in scenario.steps:
            started = time.monotonic()
            try:
                summary = getattr(self, "_" + step.kind)(step)
            except StepFailed as exc:
                outcome.failed.append(f"{step.where()}: {exc}")
                self.out(f"  FAIL {step.index:>3}  {self.describe(step)}  [{step.where()}]\n{_indent(str(exc))}")
                if not self.client.alive:
                    # every later step would fail the same way and repeat the sidecar's log
                    outcome.sidecar_died = True
                    self.out(f"  the sidecar exited (code {self.client.exit_code}); the remaining steps were not run")
                    break
                if not self.keep_going:
                    break
                continue
            except (refs.RefError, ScenarioError) as exc:
                outcome.failed.append(f"{step.where()}: {exc}")
                self.out(f"  FAIL {step.index:>3}  {self.describe(step)}  [{step.where()}]\n{_indent(str(exc))}")
                break
            outcome.passed += 1
            ms = (time.monotonic() - started) * 1000
            self.out(f"  ok   {step.index:>3}  {self.describe(step)}{('  ' + summary) if summary else ''}  ({ms:.0f} ms)")
        if self.client.bad_lines:
            text = "\n".join(self.client.bad_lines[:5])
            outcome.failed.append(f"the sidecar wrote non-JSON lines on stdout:\n{text}")
            self.out(f"  FAIL      the sidecar wrote {len(self.client.bad_lines)} non-JSON line(s) on stdout:\n{_indent(text)}")
        self.out(
            f"{'PASSED' if outcome.ok else 'FAILED'}: {outcome.passed} of {len(scenario.steps)} steps passed"
            + (f", {len(outcome.failed)} failure(s)" if outcome.failed else "")
        )
        return outcome

    @staticmethod
    def describe(step: Step) -> str:
        s = step.spec
        label = s.get("name")
        if label:
            return str(label)
        kind = step.kind
        if kind in ("request", "notify"):
            return f"{kind} {s[kind]}"
        if kind == "await":
            a = s["await"] if isinstance(s["await"], dict) else {}
            if "task" in a:
                return f"await task {a['task']} {a.get('status', '')}".rstrip()
            return f"await notification {a.get('notification', '')}"
        if kind == "raw":
            return f"raw {str(s['raw'])[:40]}"
        return f"{kind} {json.dumps(s[kind])[:60]}"

    # -- step kinds ------------------------------------------------------------------------------

    def _request(self, step: Step) -> str:
        s = step.spec
        params = refs.substitute(s.get("params"), self.saved)
        timeout = float(s.get("timeout_s", 30))
        try:
            response = self.client.request(str(s["request"]), params, timeout=timeout)
        except TimeoutError as exc:
            raise StepFailed(str(exc)) from None
        except ConnectionError as exc:
            raise StepFailed(str(exc)) from None
        return self._check_response(step, response)

    def _raw(self, step: Step) -> str:
        s = step.spec
        line = s["raw"] if isinstance(s["raw"], str) else json.dumps(refs.substitute(s["raw"], self.saved))
        response = self.client.send_raw(refs.substitute(line, self.saved), timeout=float(s.get("timeout_s", 10)))
        if response is None:
            if "expect" in s:
                raise StepFailed("no response arrived")
            return "no response"
        return self._check_response(step, response)

    def _check_response(self, step: Step, response: Any) -> str:
        s = step.spec
        expect = refs.substitute(s.get("expect"), self.saved)
        is_error = isinstance(response, dict) and "error" in response
        if expect is not None:
            if not isinstance(expect, dict):
                raise ScenarioError(f"{step.where()}: expect must be a mapping with result: and/or error:")
            if "error" in expect:
                exp_err = expect["error"]
                if isinstance(exp_err, int):
                    exp_err = {"code": exp_err}
                if not is_error:
                    raise StepFailed(
                        f"expected an error {json.dumps(exp_err)}, got a result:\n{_indent(_pretty(response.get('result')), 4)}"
                    )
                if not matches(exp_err, response["error"]):
                    raise StepFailed("the error does not match:\n" + render_diff(exp_err, response["error"]))
            if is_error and "error" not in expect and "response" not in expect:
                raise StepFailed(f"expected a result, got the error {json.dumps(response['error'], ensure_ascii=False)}")
            if "result" in expect and not matches(expect["result"], response.get("result")):
                raise StepFailed("the result does not match:\n" + render_diff(expect["result"], response.get("result")))
            if "response" in expect and not matches(expect["response"], response):
                raise StepFailed("the response does not match:\n" + render_diff(expect["response"], response))
        elif is_error and not s.get("allow_error"):
            raise StepFailed(f"the request failed: {json.dumps(response['error'], ensure_ascii=False)} (add expect: {{error: ...}} if intended)")
        if "save" in s:
            self.saved[str(s["save"])] = response.get("error") if is_error else response.get("result") if isinstance(response, dict) else response
        if is_error:
            return f"-> error {response['error'].get('code')}"
        return "-> " + _summarize(response.get("result") if isinstance(response, dict) else response)

    def _notify(self, step: Step) -> str:
        self.client.notify(str(step.spec["notify"]), refs.substitute(step.spec.get("params"), self.saved))
        return ""

    def _sleep(self, step: Step) -> str:
        time.sleep(float(step.spec["sleep"]))
        return ""

    def _await(self, step: Step) -> str:
        a = step.spec["await"]
        if not isinstance(a, dict):
            raise ScenarioError(f"{step.where()}: await needs a mapping ({{task: ..., status: ...}} or {{notification: ...}})")
        within = float(a.get("within_s", 10))
        board = self.client.board
        started = time.monotonic()
        if "task" in a:
            task_id = refs.task_id(a["task"], self.saved)
            statuses = a.get("status")
            statuses = [statuses] if isinstance(statuses, str) else statuses
            match = refs.substitute(a.get("match"), self.saved)
            start = self._await_pos.get(task_id, 0)
            reached: list[int] = []

            def done() -> bool:
                task = board.tasks.get(task_id)
                if statuses:
                    history = board.status_history.get(task_id, [])
                    hits = [i for i in range(start, len(history)) if history[i] in statuses]
                    if not hits:
                        return False
                    reached[:] = hits[:1]
                return match is None or (task is not None and matches(match, task))

            if not board.wait_for(lambda: done() or not self.client.alive, within) or not done():
                task = board.get(task_id)
                history = board.status_history.get(task_id, [])
                want = " or ".join(statuses) if statuses else "a match"
                msg = f"task {task_id} did not reach {want} within {within:g} s"
                msg += f"\n  statuses seen: {' -> '.join(history) or 'none (no notification about this task)'}"
                if start:
                    msg += f" (the first {start} used up by earlier awaits)"
                if task is not None:
                    msg += f"\n  last known: status={task.get('status')} progress={task.get('progress')} attempt={task.get('attempt')} error={task.get('error')!r}"
                if match is not None and task is not None:
                    msg += "\n" + render_diff(match, task)
                if not self.client.alive:
                    msg += f"\n  the sidecar exited (code {self.client.exit_code})\n{self.client.stderr_text()}"
                raise StepFailed(msg)
            task = board.get(task_id)
            if reached:
                self._await_pos[task_id] = reached[0] + 1
                status = board.status_history[task_id][reached[0]]
            else:
                status = task.get("status") if task else "?"
            if "save" in a:
                self.saved[str(a["save"])] = task
            return f"-> {status} after {time.monotonic() - started:.2f} s"
        if "notification" in a:
            method = str(a["notification"])
            match = refs.substitute(a.get("match"), self.saved)
            found: list[Any] = []

            def seen() -> bool:
                for ev in board.events:
                    if ev.method == method and (match is None or matches(match, ev.params)):
                        found.append(ev.params)
                        return True
                return False

            if not board.wait_for(lambda: seen() or not self.client.alive, within) or not found:
                same = [ev.params for ev in board.events if ev.method == method]
                msg = f"no {method} notification matching within {within:g} s ({len(same)} {method} seen)"
                if match is not None and same:
                    closest = min(same, key=lambda p: len(mismatches(match, p)))
                    msg += "\n  closest one:\n" + render_diff(match, closest)
                raise StepFailed(msg)
            if "save" in a:
                self.saved[str(a["save"])] = found[0]
            return ""
        raise ScenarioError(f"{step.where()}: await needs task: or notification:")

    def _check(self, step: Step) -> str:
        c = step.spec["check"]
        if not isinstance(c, dict):
            raise ScenarioError(f"{step.where()}: check needs a mapping")
        board = self.client.board
        if c.get("seq_contiguous"):
            if board.gaps:
                raise StepFailed(f"task.updated seq has gaps (expected, got): {board.gaps}")
        if "history" in c:
            task_id = refs.task_id(c["task"], self.saved)
            want = list(c["history"])
            got = board.status_history.get(task_id, [])
            if want != got:
                raise StepFailed(f"status history of task {task_id}:\n  expected: {' -> '.join(want)}\n  actual:   {' -> '.join(got) or '(none)'}")
        if "all_terminal" in c and c["all_terminal"]:
            within = float(c.get("within_s", 10))
            if not board.wait_for(lambda: all(t.get("status") in TERMINAL for t in board.tasks.values()), within):
                left = [f"{t['id'][:8]} {t.get('status')}" for t in board.tasks.values() if t.get("status") not in TERMINAL]
                raise StepFailed(f"tasks not terminal after {within:g} s: {', '.join(left)}")
        return ""


def _summarize(result: Any) -> str:
    if isinstance(result, dict) and "status" in result and "id" in result:
        return f"{result.get('type')} {str(result['id'])[:8]} {result['status']}"
    if isinstance(result, dict) and isinstance(result.get("tasks"), list):
        return f"{len(result['tasks'])} task(s)"
    text = json.dumps(result, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _indent(text: str, n: int = 8) -> str:
    return "\n".join(" " * n + line if line else line for line in text.splitlines())
