"""Fixtures for the harness tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def scenario_file(tmp_path: Path):
    """Write a scenario text to a file and return its path."""

    def write(text: str, name: str = "scenario.yaml") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
