"""The environment a launcher starts the sidecar with (the harness, the tests and the bench use
this; electron-bridge's ``sidecarEnv`` is its TypeScript twin).

``PYTHONUTF8=1``: logs and the programs handlers run see UTF-8 on every platform.

``PYTHONMALLOC=malloc`` on Linux, unless the caller chose an allocator: Python's own small-object
allocator (pymalloc) hands memory back only in whole 1 MiB arenas, and after a burst of work a
few long-lived objects made during it keep some of them each (measured: RSS +16-18 % after
100,000 tasks, 5-6 arenas that hold almost nothing). glibc's malloc returns every free page when
the sidecar trims after a burst (sidecar/memory.py): +2.5-3 % measured, drain throughput within
noise. Not set elsewhere: unmeasured there. A frozen build ignores the variable (PyInstaller's
bootloader does not read ``PYTHON*`` variables), so it keeps pymalloc.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def sidecar_env(base: Mapping[str, str] | None = None, *, platform: str = sys.platform) -> dict[str, str]:
    """``base`` (default: this process's environment) with the variables the sidecar wants."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUTF8"] = "1"
    if platform.startswith("linux"):
        env.setdefault("PYTHONMALLOC", "malloc")
    return env
