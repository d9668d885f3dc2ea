"""Handlers used by the black-box tests (loaded with ``--handlers fixture_handlers``)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

from sidecar.handlers import TaskContext, handler


@handler("test.one_at_a_time", concurrency=1)
def one_at_a_time(ctx: TaskContext) -> dict:
    ctx.sleep(float(ctx.details.get("seconds", 0.2)))
    return {"at": time.time()}


@handler("test.noisy")
def noisy(ctx: TaskContext) -> dict:
    # Everything here must land on stderr, never on the protocol stream.
    print("stray print from a handler")
    sys.stdout.write("stray sys.stdout write\n")
    os.write(1, b"raw write to fd 1\n")
    # not sys.executable: in a frozen build that is the sidecar itself
    echo = ["cmd", "/c", "echo child process output"] if os.name == "nt" else ["sh", "-c", "echo child process output"]
    subprocess.run(echo, check=True)
    return {"ok": True}


@handler("test.ignores_cancel")
def ignores_cancel(ctx: TaskContext) -> dict:
    deadline = time.monotonic() + float(ctx.details.get("seconds", 30))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"finished": True}


@handler("test.slow", timeout_s=0.5, max_attempts=1)
def slow(ctx: TaskContext) -> dict:
    ctx.sleep(30)
    return {}


@handler("test.flaky", max_attempts=3, retry_base_s=0.1, retry_max_s=1)
def flaky(ctx: TaskContext) -> dict:
    if ctx.attempt < int(ctx.details.get("succeed_on", 3)):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@handler("test.report_then_return")
def report_then_return(ctx: TaskContext) -> dict:
    """Report progress with a message, wait ``wait`` seconds (0: return at once), then return."""
    ctx.progress(40, "fetched")
    if ctx.details.get("wait"):
        time.sleep(float(ctx.details["wait"]))
    return {"done": True}


@handler("test.bad_result")
def bad_result(ctx: TaskContext) -> object:
    return {"not json": object()}


@handler("test.burst")
def burst(ctx: TaskContext) -> dict:
    for i in range(1, 501):
        ctx.progress(i / 10, f"burst {i}")
    ctx.sleep(1.0)  # quiet: the last value must still be announced while RUNNING
    return {}


@handler("test.playlist")
def playlist(ctx: TaskContext) -> dict:
    """Fetch 'metadata', then fan out one child per entry (as Playlistify's import does)."""
    entries = int(ctx.details.get("entries", 3))
    ctx.progress(10, "metadata fetched")
    for n in range(entries):
        ctx.spawn("demo.sleep", {"seconds": float(ctx.details.get("seconds", 0.2)), "steps": 2})
    if ctx.details.get("fail_after_spawn"):
        raise RuntimeError("playlist handler failed after spawning")
    return {"entries": entries}


@handler("test.gc_state")
def gc_state(ctx: TaskContext) -> dict:
    """Whether Python's automatic garbage collection is on in the sidecar (it pauses while a big
    request is in flight and must always come back on)."""
    return {"enabled": gc.isenabled(), "threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}


@handler("test.pymalloc_blocks")
def pymalloc_blocks(ctx: TaskContext) -> dict:
    """How many blocks in pymalloc's arenas 50,000 small dicts take in the sidecar: about 100,000
    with pymalloc, none once it allocates with malloc (sidecar.memory)."""
    blocks = sys.getallocatedblocks()
    burst = [{"n": str(i)} for i in range(50_000)]
    grown = sys.getallocatedblocks() - blocks
    del burst
    return {"blocks": grown}


@handler("test.gc_keep_garbage")
def gc_keep_garbage(ctx: TaskContext) -> dict:
    """From now on, keep what the garbage collector finds (gc.DEBUG_SAVEALL) for test.gc_garbage."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    return {}


@handler("test.gc_garbage")
def gc_garbage(ctx: TaskContext) -> dict:
    """The types of the reference cycles made since test.gc_keep_garbage (refcounting could not free
    them: each one is work for the collector)."""
    gc.collect()
    types: dict[str, int] = {}
    for found in gc.garbage:
        name = type(found).__qualname__
        types[name] = types.get(name, 0) + 1
    gc.set_debug(0)
    gc.garbage.clear()
    return {"types": types}


@handler("test.slow_to_stop")
def slow_to_stop(ctx: TaskContext) -> dict:
    """Looks for a stop only every ``every`` seconds, as a handler in blocking I/O does: a second
    request (cancel after pause) arrives while the first is still pending."""
    end = time.monotonic() + float(ctx.details.get("seconds", 30))
    while time.monotonic() < end:
        time.sleep(float(ctx.details.get("every", 1.0)))
        ctx.raise_if_cancelled()
    return {"finished": True}


@handler("test.slow_to_stop_timeout", timeout_s=0.5, max_attempts=3, retry_base_s=0.1, retry_max_s=0.2)
def slow_to_stop_timeout(ctx: TaskContext) -> dict:
    return slow_to_stop(ctx)


@handler("test.spawn_then_fail", max_attempts=1)
def spawn_then_fail(ctx: TaskContext) -> dict:
    """Spawns ``n`` children that run for a while, then fails for good."""
    seconds = float(ctx.details.get("seconds", 30))
    ctx.spawn_many([{"type": "test.ignores_cancel", "details": {"seconds": seconds}}
                    for _ in range(int(ctx.details.get("n", 2)))])
    raise RuntimeError("the parent failed after spawning")


@handler("test.spawn_late")
def spawn_late(ctx: TaskContext) -> dict:
    """Busy for ``fetch`` seconds without looking for a stop (a metadata fetch), then spawns ``n``
    children: a cancel or pause asked meanwhile finds children that did not exist yet."""
    time.sleep(float(ctx.details.get("fetch", 1.0)))
    ctx.spawn_many([{"type": "demo.sleep", "details": {"seconds": float(ctx.details.get("child_seconds", 2))}}
                    for _ in range(int(ctx.details.get("n", 2)))])
    ctx.raise_if_cancelled()
    return {}


@handler("test.fail_once", max_attempts=1)
def fail_once(ctx: TaskContext) -> dict:
    """Fails the first time it runs (leaving ``marker``), succeeds once the marker exists."""
    marker = str(ctx.details["marker"])
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("failing once")
    return {"second": True}


# JSON Schema 2020-12 keywords that draft-07 does not have or reads otherwise: the sidecar must
# refuse what this schema refuses, not what a draft-07 checker would.
SCHEMA_2020_12 = {
    "type": "object",
    "$defs": {"clip": {"type": "object", "required": ["url"]}},
    "properties": {
        "clip": {"$ref": "#/$defs/clip", "properties": {"url": {"type": "string"}}},  # $ref beside assertions
        "range": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": False},
        "tags": {"type": "array", "contains": {"const": "music"}, "minContains": 2},
        "start": {"type": "number"},
        "end": {"type": "number"},
    },
    "dependentRequired": {"start": ["end"]},
    "unevaluatedProperties": False,
}


@handler("test.schema_2020_12", details_schema=SCHEMA_2020_12)
def schema_2020_12(ctx: TaskContext) -> dict:
    return {"details": ctx.details}
