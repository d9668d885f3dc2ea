from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sidecar_client import SidecarProcess


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def start_sidecar(db_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    """Start real sidecar processes; every one is stopped (or killed) after the test."""
    started: list[SidecarProcess] = []

    def start(*args: str, db: Path | None = None, **kwargs) -> SidecarProcess:
        process = SidecarProcess(db or db_path, *args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def sidecar(start_sidecar) -> SidecarProcess:
    return start_sidecar()
