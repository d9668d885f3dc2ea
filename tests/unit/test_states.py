from __future__ import annotations

import pytest

from sidecar.domain.states import TERMINAL, TRANSITIONS, IllegalTransition, Status, allowed, check, sources


def test_terminal_statuses_only_leave_through_retry_to_queued() -> None:
    assert TRANSITIONS[Status.COMPLETED] == frozenset()
    assert TRANSITIONS[Status.FAILED] == {Status.QUEUED, Status.WAITING}
    assert TRANSITIONS[Status.CANCELLED] == {Status.QUEUED, Status.WAITING}


def test_every_status_has_a_row() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert TERMINAL == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("target", list(Status))
def test_check_agrees_with_the_table(current: Status, target: Status) -> None:
    if target in TRANSITIONS[current]:
        check("t", current, target)
        assert allowed(current, target)
        assert current.value in sources(target)
    else:
        with pytest.raises(IllegalTransition):
            check("t", current, target)
        assert current.value not in sources(target)


def test_only_a_queued_task_can_start() -> None:
    assert sources(Status.RUNNING) == ("QUEUED",)
