"""Bench-only handlers, loaded into the sidecar with ``--handlers bench.handlers``.

Their schemas are ``trusted`` like the built-in handlers' (they ship in this repository): the
bench's runs through electron-bridge load this module, and an app's schema check at start-up
(jsonschema's import, ~40 ms from source) would be counted as the bridge's start-up.
"""

from __future__ import annotations

import time
from typing import Any

from sidecar.handlers import handler


@handler("bench.progress", details_schema={"type": "object"}, trusted=True)
def progress(ctx: Any) -> dict[str, Any]:
    """Report progress ``rate`` times a second for ``seconds``; the last report is ``tick n/n``."""
    rate = float(ctx.details.get("rate", 1000))
    seconds = float(ctx.details.get("seconds", 2.0))
    linger = float(ctx.details.get("linger", 0.3))
    n = max(1, int(rate * seconds))
    start = time.perf_counter()
    for i in range(1, n + 1):
        ctx.progress(i * 99.0 / n, f"tick {i}/{n}")
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    reporting_s = time.perf_counter() - start  # the rate asked for is over these seconds, not the linger
    # stay RUNNING a little: the coalesced last value must reach the client as a progress update
    time.sleep(linger)
    return {"ticks": n, "seconds": round(reporting_s, 3)}


@handler("bench.hold", details_schema={"type": "object"}, trusted=True)
def hold(ctx: Any) -> dict[str, Any]:
    """Stay RUNNING until cancelled or ``seconds`` pass (a long-running parent)."""
    ctx.sleep(float(ctx.details.get("seconds", 60)))
    return {}
