"""``--demo`` without a terminal: plain lines, a summary, exit 0, quickly."""

from __future__ import annotations

import re
import time

from .helpers import run_harness


def test_demo_runs_to_the_end_in_plain_mode() -> None:
    started = time.monotonic()
    proc = run_harness("--demo", timeout=60)
    took = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert took < 15, f"the demo took {took:.1f} s"
    assert "\x1b[" not in out  # no live view / colours when stdout is not a terminal
    # the batch and its children, as timestamped lines
    assert re.search(r"playlist import \(6 videos\)\s+COMPLETED", out)
    for n in (1, 2, 3, 4):
        assert re.search(rf"video {n} \S+\s+COMPLETED\s+100\.0%", out)
    # the broken link is retried (back to QUEUED with its error), then fails on its last attempt
    assert re.search(r"video 5 \(removed\)\s+QUEUED .*try 1/2\s+error='HTTP 410: video removed'", out)
    assert re.search(r"video 5 \(removed\)\s+FAILED .*try 2/2", out)
    # the long download is cancelled midway
    assert "* cancelling video 6 4k-concert.mp4 at" in out
    m = re.search(r"video 6 4k-concert.mp4\s+CANCELLED\s+([\d.]+)%", out)
    assert m and 0 < float(m.group(1)) < 100
    # the summary table, every row checked
    assert "summary" in out
    assert out.count("│ ok ") == 7
    assert "demo OK in" in out
