"""What a launcher (harness, tests, bench) adds to the sidecar's environment."""

from __future__ import annotations

from sidecar.launch import sidecar_env


def test_utf8_mode_is_always_on() -> None:
    assert sidecar_env({"A": "1"}) == {"A": "1", "PYTHONUTF8": "1"}
    assert sidecar_env({"PYTHONUTF8": "0"}) == {"PYTHONUTF8": "1"}


def test_the_base_is_not_changed() -> None:
    base = {"A": "1"}
    sidecar_env(base)
    assert base == {"A": "1"}
