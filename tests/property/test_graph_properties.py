"""Property-based: random graphs of parents and dependencies, against a real sidecar.

* every graph with a cycle in its "waits for" relation is refused with -32004,
* no acyclic graph is refused,
* every accepted graph drains: all its tasks end terminal, none left WAITING forever.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sidecar_client import RpcError, SidecarProcess


@pytest.fixture(scope="module")
def shared_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    process = SidecarProcess(Path(tmp_path_factory.mktemp("prop")) / "p.db", "--concurrency", "8")
    yield process
    process.stop()


def has_cycle(n: int, parents: dict[int, int], deps: dict[int, set[int]]) -> bool:
    waits: dict[int, set[int]] = {i: set(deps.get(i, ())) for i in range(n)}
    for child, parent in parents.items():
        waits[parent].add(child)
    color = [0] * n

    def visit(v: int) -> bool:
        color[v] = 1
        for w in waits[v]:
            if color[w] == 1 or (color[w] == 0 and visit(w)):
                return True
        color[v] = 2
        return False

    return any(color[v] == 0 and visit(v) for v in range(n))


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, dict[int, int], dict[int, set[int]], list[str]]:
    n = draw(st.integers(min_value=1, max_value=7))
    parents: dict[int, int] = {}
    for i in range(n):
        if draw(st.booleans()):
            parents[i] = draw(st.integers(min_value=0, max_value=n - 1))
    deps = {i: set(draw(st.lists(st.integers(0, n - 1), max_size=3))) for i in range(n)}
    types = [draw(st.sampled_from(["demo.noop", "demo.noop", "demo.fail"])) for _ in range(n)]
    return n, parents, deps, types


def wait_terminal(sidecar: SidecarProcess, ids: list[str], timeout: float = 15) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: sidecar.call("tasks.get", {"id": i})["status"] for i in ids}
        if all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"graph did not drain: {statuses}")
        time.sleep(0.05)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs())
def test_one_call_graphs(shared_sidecar: SidecarProcess, graph) -> None:
    n, parents, deps, types = graph
    items = []
    for i in range(n):
        item: dict = {"ref": f"n{i}", "type": types[i], "onChildFailure": "continue" if i % 2 else "fail"}
        if i in parents:
            item["parentId"] = f"n{parents[i]}"
        if deps[i]:
            item["dependsOn"] = [f"n{d}" for d in sorted(deps[i])]
        items.append(item)
    expect_cycle = has_cycle(n, parents, deps)
    try:
        tasks = shared_sidecar.call("tasks.createMany", {"tasks": items})["tasks"]
    except RpcError as exc:
        assert exc.code == -32004, exc
        assert expect_cycle, f"acyclic graph refused: {items}"
        loop = [node["ref"] for node in exc.data["cycle"]]
        assert loop[0] == loop[-1]
        return
    assert not expect_cycle, f"cycle accepted: {items}"
    wait_terminal(shared_sidecar, [t["id"] for t in tasks])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs())
def test_graphs_built_one_task_at_a_time(shared_sidecar: SidecarProcess, graph) -> None:
    n, parents, deps, types = graph
    ids: dict[int, str] = {}
    accepted_parents: dict[int, int] = {}
    accepted_deps: dict[int, set[int]] = {}
    # create in index order; references only to tasks already created (others dropped)
    blocker = shared_sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.3, "steps": 1}})
    for i in range(n):
        parent = parents.get(i)
        my_deps = {d for d in deps[i] if d in ids}
        params: dict = {"type": types[i], "dependsOn": [blocker["id"]] + [ids[d] for d in sorted(my_deps)]}
        if parent is not None and parent in ids:
            params["parentId"] = ids[parent]
        trial_parents = dict(accepted_parents)
        if "parentId" in params:
            trial_parents[i] = parent
        trial_deps = {**accepted_deps, i: my_deps}
        expect_cycle = has_cycle(i + 1, trial_parents, {k: v for k, v in trial_deps.items()})
        try:
            task = shared_sidecar.call("tasks.create", params)
        except RpcError as exc:
            if exc.code == -32002:  # the parent already finished: no new children
                continue
            assert exc.code == -32004 and expect_cycle, (exc, params)
            continue
        assert not expect_cycle, params
        ids[i] = task["id"]
        accepted_parents = trial_parents
        accepted_deps = trial_deps
    wait_terminal(shared_sidecar, [blocker["id"], *ids.values()])
