"""The environment a launcher starts the sidecar with (the harness, the tests and the bench use
this; electron-bridge's ``sidecarEnv`` is its TypeScript twin).

``PYTHONUTF8=1``: logs and the programs handlers run see UTF-8 on every platform.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def sidecar_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the variables the sidecar wants."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUTF8"] = "1"
    return env
