"""Switching Python's allocator to malloc at run time (sidecar.memory.allocate_objects_with_malloc).

Each case runs in a fresh interpreter: the switch is for the whole process and cannot be undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sidecar.memory import find_malloc_trim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(find_malloc_trim() is None, reason="the switch is made on glibc only")

PROBE = r"""
import json, os, sys
# sys.getallocatedblocks(): blocks held in pymalloc's arenas, whichever allocator is current
from sidecar.memory import allocate_objects_with_malloc, release_free_memory
if os.environ.get("PROBE_AS_FROZEN"):
    sys.frozen = True  # as PyInstaller's bootloader sets it
before_switch = [str(i) * 3 for i in range(200_000)]  # pymalloc blocks, freed after the switch
grown = [[i] for i in range(10_000)]
switched = allocate_objects_with_malloc()
start = sys.getallocatedblocks()
burst = [{"id": str(i), "n": i, "t": (i, i + 1)} for i in range(300_000)]
for item in grown:
    item.extend(range(20))  # resized after the switch
after_burst = sys.getallocatedblocks()
del before_switch, burst
ok = sum(len(item) for item in grown) == 210_000
release_free_memory()
print(json.dumps({"switched": switched, "start": start, "after_burst": after_burst, "ok": ok}))
"""


def run(*args: str, env: dict[str, str] | None = None) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "PYTHONDEVMODE", "PYTHONTRACEMALLOC")}
    out = subprocess.run(
        [sys.executable, *args, "-c", PROBE], cwd=ROOT, env={**base, **(env or {})},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_after_the_switch_new_objects_take_no_pymalloc_arenas_and_old_blocks_stay_valid() -> None:
    result = run()
    assert result["switched"] is True
    assert result["ok"] is True
    # 300,000 dicts, strings and tuples: about a million blocks with pymalloc
    assert result["after_burst"] - result["start"] < 10_000


def test_pymalloc_stays_without_the_switch_so_the_probe_can_tell() -> None:
    result = run(env={"PYTHONMALLOC": "pymalloc"})
    assert result["switched"] is False
    assert result["after_burst"] - result["start"] > 500_000


@pytest.mark.parametrize("args, env", [
    (("-X", "dev"), {}),
    (("-X", "tracemalloc"), {}),
    ((), {"PYTHONMALLOC": "malloc"}),
    ((), {"PYTHONMALLOC": "pymalloc_debug"}),
])
def test_no_switch_under_debug_hooks_tracemalloc_or_a_chosen_allocator(args: tuple[str, ...], env: dict[str, str]) -> None:
    result = run(*args, env=env)
    assert result["switched"] is False
    assert result["ok"] is True


@pytest.mark.parametrize("asked, switched", [(None, True), ("malloc", True), ("pymalloc", False)])
def test_a_frozen_build_switches_unless_pymalloc_was_asked_for(asked: str | None, switched: bool) -> None:
    # a frozen interpreter ignored PYTHONMALLOC, so "malloc" still needs the switch
    env = {"PROBE_AS_FROZEN": "1", **({"PYTHONMALLOC": asked} if asked else {})}
    result = run(env=env)
    assert result["switched"] is switched
    assert result["ok"] is True
