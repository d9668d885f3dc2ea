"""Handlers frozen into the CI test build (``build/freeze.py --handlers fixture_handlers frozen_handlers``).

They let tests/blackbox/test_frozen.py look inside the binary: that it really runs frozen (no
Python from the machine, no PYTHONPATH), with the interpreter options the spec sets, and that
stray output of a handler, including a child process, lands on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys

from sidecar.handlers import TaskContext, handler


@handler("frozen.env")
def env(ctx: TaskContext) -> dict:
    stdout_raw = getattr(getattr(sys.stdout, "buffer", None), "raw", getattr(sys.stdout, "buffer", None))
    return {
        "frozen": bool(getattr(sys, "frozen", False)),
        "executable": sys.executable,
        "path": sys.path,
        "utf8Mode": sys.flags.utf8_mode,
        "stdoutBuffer": type(getattr(sys.stdout, "buffer", None)).__name__,
        "stdoutRaw": type(stdout_raw).__name__,
        "multiprocessing": "multiprocessing" in sys.modules,
    }


@handler("frozen.noisy")
def noisy(ctx: TaskContext) -> dict:
    # fixture_handlers' test.noisy starts `sys.executable -c ...`: in a frozen build sys.executable
    # is the sidecar binary itself, not a Python. Start the binary with --version instead (it
    # prints to its stdout, which is our fd 1, which the sidecar pointed at stderr).
    print("stray print from a frozen handler")
    sys.stdout.write("stray sys.stdout write\n")
    os.write(1, b"raw write to fd 1\n")
    child = [sys.executable, "--version"] if getattr(sys, "frozen", False) else [
        sys.executable, "-c", "print('task-sidecar child')"]
    subprocess.run(child, check=True, stdin=subprocess.DEVNULL)
    return {"ok": True}
