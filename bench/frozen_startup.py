"""Start-up of the frozen sidecar (issue 8), measured by build/measure.py, in the bench's format.

    python -m bench.frozen_startup --form onedir|onefile --runs N

Needs a build (`python build/freeze.py`, or CI's .ci/frozen which runs before the bench smoke);
without one it reports "not built" rather than failing the bench.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.common import ROOT, emit, summary

BINARIES = {
    "onedir": ROOT / "build" / "dist" / "task-sidecar" / "task-sidecar",
    "onefile": ROOT / "build" / "dist" / "onefile" / "task-sidecar",
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--form", choices=sorted(BINARIES), default="onedir")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    binary = BINARIES[a.form]
    if sys.platform == "win32":
        binary = binary.with_suffix(".exe")
    if not binary.exists():
        emit({"not_built": str(binary.relative_to(ROOT))})
        return
    out = subprocess.run(
        [sys.executable, str(ROOT / "build" / "measure.py"), "--runs", str(a.runs), "--json", "--", str(binary)],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    m = json.loads(out.strip().splitlines()[-1])
    emit({"form": a.form, "ms": summary(m["ready_ms"], 1), "rss_at_ready_mb": summary([m["idle_rss_mib"] * 1.048576], 1),
          "size_binary": str(binary.relative_to(ROOT))})


if __name__ == "__main__":
    main()
