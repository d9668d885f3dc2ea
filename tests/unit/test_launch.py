"""What a launcher (harness, tests, bench) adds to the sidecar's environment."""

from __future__ import annotations

from sidecar.launch import sidecar_env


def test_utf8_always_and_the_malloc_allocator_on_linux() -> None:
    assert sidecar_env({"A": "1"}, platform="linux") == {"A": "1", "PYTHONUTF8": "1", "PYTHONMALLOC": "malloc"}
    assert sidecar_env({"PYTHONUTF8": "0"}, platform="darwin") == {"PYTHONUTF8": "1"}
    assert sidecar_env({}, platform="win32") == {"PYTHONUTF8": "1"}


def test_an_allocator_the_caller_chose_is_kept() -> None:
    assert sidecar_env({"PYTHONMALLOC": "pymalloc_debug"}, platform="linux")["PYTHONMALLOC"] == "pymalloc_debug"


def test_the_base_is_not_changed() -> None:
    base = {"A": "1"}
    sidecar_env(base, platform="linux")
    assert base == {"A": "1"}
