"""Script mode: ``task-sidecar-harness run SCENARIO`` on passing and failing scenarios, against the
real sidecar. The failure messages are part of the contract: they are what a developer reads in CI."""

from __future__ import annotations

import sys

import pytest

from .helpers import FAKE_SIDECAR, SCENARIOS, run_harness


def test_passing_scenarios_exit_zero_and_report_each_step() -> None:
    proc = run_harness("run", *(str(SCENARIOS / name) for name in ("lifecycle.yaml", "quick.jsonl", "cancel.yaml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED: 23 of 23 steps passed" in proc.stdout
    assert "PASSED: 4 of 4 steps passed" in proc.stdout
    assert "PASSED: 6 of 6 steps passed" in proc.stdout
    assert "3 of 3 scenarios passed" in proc.stdout
    assert "  ok    22  request tasks.stats" in proc.stdout


def test_a_wrong_result_fails_with_a_field_by_field_diff() -> None:
    proc = run_harness("run", str(SCENARIOS / "failing" / "wrong_result.yaml"))
    assert proc.returncode == 1
    out = proc.stdout
    assert "FAIL   2  a delayed task is not complete  [step 2 (line 5)]" in out
    assert 'status: expected "COMPLETED", got "QUEUED"' in out
    assert "progress: expected 100, got 0" in out
    assert '-  "status": "COMPLETED",' in out and '+  "status": "QUEUED",' in out
    # it stops at the first failure: step 3 never runs
    assert "FAILED: 1 of 3 steps passed, 1 failure(s)" in out
    assert "  3  request" not in out


def test_an_await_that_times_out_says_what_was_seen() -> None:
    proc = run_harness("run", str(SCENARIOS / "failing" / "await_timeout.yaml"))
    assert proc.returncode == 1
    assert "did not reach COMPLETED within 0.5 s" in proc.stdout
    assert "statuses seen: QUEUED -> RUNNING" in proc.stdout
    assert "last known: status=RUNNING" in proc.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("expected_error.yaml", 'expected an error {"code": -32601}, got a result:'),
        ("unexpected_error.yaml", 'expected a result, got the error {"code": -32001'),
        ("bad_reference.yaml", "unknown reference ${nothing.id}: nothing was saved as 'nothing'"),
        ("notification_mismatch.jsonl", 'task.error: expected "disk full", got null'),
    ],
)
def test_failing_scenarios_name_the_problem(name: str, message: str) -> None:
    proc = run_harness("run", str(SCENARIOS / "failing" / name))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stdout
    assert "FAIL" in proc.stdout


def test_keep_going_runs_every_step(scenario_file) -> None:
    path = scenario_file(
        """
steps:
  - request: system.ping
    expect: {result: ping}
  - request: system.ping
    expect: {result: pong}
"""
    )
    proc = run_harness("run", "--keep-going", path)
    assert proc.returncode == 1
    assert 'FAIL   1' in proc.stdout and "(top): expected \"ping\", got \"pong\"" in proc.stdout
    assert "ok     2" in proc.stdout
    assert "FAILED: 1 of 2 steps passed" in proc.stdout


def test_a_malformed_scenario_file_is_a_usage_error(scenario_file) -> None:
    path = scenario_file("steps:\n  - request: system.ping\n    await: {task: x}\n")
    proc = run_harness("run", path)
    assert proc.returncode == 2
    assert "a step needs exactly one of" in proc.stderr
    assert ":2:" in proc.stderr  # points at the line

    bad_yaml = scenario_file("steps: [unclosed\n", name="broken.yaml")
    proc = run_harness("run", bad_yaml)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps:\n  - request: system.ping\n    expct: {result: ping}\n", ":2: unknown key 'expct' in a request step"),
        ("steps:\n  - request: system.ping\n    expect: {result: {$foo: 1}}\n", ":2: expect.result: unknown operator $foo"),
        ("steps:\n  - check: {seq_contiguos: true}\n", ":2: unknown key 'seq_contiguos' in check"),
        ("steps:\n  - sleep: abc\n", ":2: sleep must be a number of seconds"),
        ("steps:\n  - await: {within_s: 1}\n", ":2: await needs exactly one of task: or notification:"),
    ],
)
def test_a_misspelt_key_is_a_scenario_error_not_a_pass(scenario_file, text: str, message: str) -> None:
    proc = run_harness("run", scenario_file(text))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_operators_saved_values_and_raw_requests(scenario_file) -> None:
    path = scenario_file(
        """
name: operators
steps:
  - request: tasks.createMany
    params:
      tasks:
        - {type: demo.noop, priority: 5, idempotencyKey: "k-1"}
        - {type: demo.sleep, details: {seconds: 0.1, steps: 2}}
    save: made
    expect:
      result:
        tasks: {$len: 2}
  - await: {task: "${made.tasks.0.id}", status: COMPLETED, within_s: 10}
  - await: {task: "${made.tasks.1.id}", status: [COMPLETED, FAILED], within_s: 10, save: second}
  - name: the idempotency key returns the same task
    request: tasks.create
    params: {type: demo.noop, idempotencyKey: "k-1"}
    expect:
      result: {id: "${made.tasks.0.id}", priority: 5}
  - name: a raw request with an id of its own
    raw: {jsonrpc: "2.0", id: "mine", method: tasks.get, params: {id: "${second.id}"}}
    expect:
      response: {id: mine}
      result: {status: {$in: [COMPLETED]}, error: {$absent: false}, message: {$not: null}}
  - name: unknown method
    request: no.such.method
    expect: {error: {code: -32601}}
"""
    )
    proc = run_harness("run", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED: 6 of 6 steps passed" in proc.stdout


def test_a_sidecar_that_dies_mid_scenario_is_reported(scenario_file) -> None:
    path = scenario_file("steps:\n  - request: system.ping\n  - request: system.ping\n  - request: system.ping\n")
    proc = run_harness("--cmd", f"{sys.executable} {FAKE_SIDECAR} --die-after 1", "run", "--keep-going", path)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # died, not a failed check
    assert "exited (code 3) before answering system.ping" in proc.stdout
    # reported once, even with --keep-going: the steps left are not run
    assert proc.stdout.count("exited (code 3)") == 2 and "the remaining steps were not run" in proc.stdout
    assert "FAIL   3" not in proc.stdout


def test_stray_output_on_the_sidecars_stdout_fails_the_scenario(scenario_file) -> None:
    path = scenario_file("steps:\n  - request: system.ping\n    expect: {result: pong}\n")
    proc = run_harness("--cmd", f"{sys.executable} {FAKE_SIDECAR} --stray-line", "run", path)
    assert proc.returncode == 1
    assert "): 1 step\n" in proc.stdout  # not "1 steps"
    assert "non-JSON line(s) on stdout" in proc.stdout and "this is not json" in proc.stdout


def test_a_sidecar_that_does_not_start_is_reported(scenario_file) -> None:
    path = scenario_file("steps:\n  - request: system.ping\n")
    cmd = f"{sys.executable} -c \"import sys; sys.stderr.write('cannot open the database\\\\n'); sys.exit(5)\""
    proc = run_harness("--cmd", cmd, "run", path)
    assert proc.returncode == 3
    assert "exited with code 5 before sidecar.ready" in proc.stderr
    assert "cannot open the database" in proc.stderr
