"""``--demo``: a Playlistify-shaped workload shown live, then a summary.

A "playlist import" batch with video children: four downloads (demo.sleep) that complete, one
broken link (demo.fail, retryable, maxAttempts 2) that is retried and then fails, and one long
download cancelled midway. With task graphs (issue 4) the batch is built in one tasks.createMany
with a client-side ``ref`` and ``onChildFailure: "continue"``; a core without graphs refuses those
fields, and the demo falls back to a parent task created first and children that name it by
``parentId``. Exit 0 when everything ended as expected.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sidecar.harness.board import TERMINAL, Board
from sidecar.harness.client import Client, RpcError
from sidecar.harness.session import SidecarOptions, open_sidecar
from sidecar.harness.view import board_view, status_text

CANCEL_AT_PERCENT = 25.0
DEADLINE_S = 20.0


@dataclass
class Item:
    name: str
    params: dict[str, Any]
    expect: str  # expected final status
    role: str = "download"  # download | broken | cancel | batch
    task_id: str = ""


def workload() -> list[Item]:
    return [
        Item("video 1 intro.mp4", {"type": "demo.sleep", "details": {"seconds": 1.2, "steps": 12}}, "COMPLETED"),
        Item("video 2 live-set.mp4", {"type": "demo.sleep", "details": {"seconds": 2.0, "steps": 20}}, "COMPLETED"),
        Item("video 3 b-roll.mp4", {"type": "demo.sleep", "details": {"seconds": 0.8, "steps": 8}}, "COMPLETED"),
        Item("video 4 outro.mp4", {"type": "demo.sleep", "details": {"seconds": 1.5, "steps": 15}}, "COMPLETED"),
        Item(
            "video 5 (removed)",
            {"type": "demo.fail", "details": {"message": "HTTP 410: video removed", "retryable": True}, "maxAttempts": 2, "priority": 5},
            "FAILED",
            role="broken",
        ),
        Item("video 6 4k-concert.mp4", {"type": "demo.sleep", "details": {"seconds": 6, "steps": 60}, "priority": 10}, "CANCELLED", role="cancel"),
    ]


class Demo:
    def __init__(self, client: Client, say: Any):
        self.client = client
        self.board: Board = client.board
        self.say = say
        self.batch = Item("playlist import (6 videos)", {"type": "demo.noop"}, "COMPLETED", role="batch")
        self.items = workload()
        self.labels: dict[str, str] = {}
        self.graph_mode = False
        self.problems: list[str] = []

    def create(self) -> None:
        info = self.client.call("system.info")
        types = {h.get("type") for h in info.get("handlers", [])}
        missing = {"demo.sleep", "demo.fail", "demo.noop"} - types
        if missing:
            raise RuntimeError(f"the sidecar lacks the built-in handlers {sorted(missing)}")
        try:
            tasks = self.client.call(
                "tasks.createMany",
                {"tasks": [{"ref": "batch", "onChildFailure": "continue", **self.batch.params}]
                 + [{**it.params, "parentId": "batch"} for it in self.items]},
            )["tasks"]
            self.graph_mode = True
            self.say("batch created in one tasks.createMany (task graphs: parent waits for its children)")
        except RpcError as exc:
            if exc.code != -32602:
                raise
            self.say(f"task graphs not available ({exc.message}); parent first, then children by parentId")
            # Without graphs a parent is an ordinary task and must still be unfinished when its
            # children are added (a terminal task takes no new children): a short demo.sleep.
            self.batch.params = {"type": "demo.sleep", "details": {"seconds": 3.0, "steps": 30}}
            parent = self.client.call("tasks.create", self.batch.params)
            tasks = [parent] + self.client.call(
                "tasks.createMany", {"tasks": [{**it.params, "parentId": parent["id"]} for it in self.items]}
            )["tasks"]
        for item, task in zip([self.batch, *self.items], tasks):
            item.task_id = task["id"]
            self.labels[task["id"]] = item.name

    def drive(self) -> None:
        """Cancel the long download once it is past CANCEL_AT_PERCENT, then wait for the end."""
        target = next(it for it in self.items if it.role == "cancel")
        deadline = time.monotonic() + DEADLINE_S

        def far_enough() -> bool:
            t = self.board.tasks.get(target.task_id) or {}
            return float(t.get("progress") or 0) >= CANCEL_AT_PERCENT or t.get("status") in TERMINAL

        self.board.wait_for(far_enough, deadline - time.monotonic())
        t = self.board.get(target.task_id) or {}
        if t.get("status") not in TERMINAL:
            self.say(f"cancelling {target.name} at {float(t.get('progress') or 0):.0f}%")
            self.client.call("tasks.cancel", {"id": target.task_id})
        ids = [it.task_id for it in [self.batch, *self.items]]
        if not self.board.wait_for(lambda: all((self.board.tasks.get(i) or {}).get("status") in TERMINAL for i in ids), deadline - time.monotonic()):
            self.problems.append(f"not everything finished within {DEADLINE_S:g} s")

    def check(self) -> list[tuple[Item, dict[str, Any], list[str]]]:
        rows = []
        for item in [self.batch, *self.items]:
            task = self.client.call("tasks.get", {"id": item.task_id})
            history = self.board.status_history.get(item.task_id, [])
            wrong = []
            if task["status"] != item.expect:
                wrong.append(f"expected {item.expect}")
            if item.role == "broken":
                runs = history.count("RUNNING")
                if task["attempt"] != task["maxAttempts"] or runs < 2:
                    wrong.append(f"expected {task['maxAttempts']} attempts, saw attempt={task['attempt']} and {runs} run(s)")
                if "410" not in str(task.get("error")):
                    wrong.append(f"error text lost: {task.get('error')!r}")
            if item.role == "cancel" and float(task.get("progress") or 0) >= 100:
                wrong.append("ran to the end instead of being cancelled")
            if item.role == "download" and task.get("progress") != 100:
                wrong.append(f"progress {task.get('progress')} instead of 100")
            if item is not self.batch and task.get("parentId") != self.batch.task_id:
                wrong.append("parentId not kept")
            rows.append((item, task, wrong))
            self.problems += [f"{item.name}: {w}" for w in wrong]
        if self.board.gaps:
            self.problems.append(f"task.updated seq gaps: {self.board.gaps}")
        if self.client.bad_lines:
            self.problems.append(f"non-JSON lines on the sidecar's stdout: {self.client.bad_lines[:3]}")
        return rows


def summary_table(rows: list[tuple[Item, dict[str, Any], list[str]]]) -> Table:
    table = Table(title="summary", title_justify="left")
    for col in ("task", "id", "type", "status", "tries", "took", "progress", "check"):
        table.add_column(col, justify="right" if col in ("tries", "took", "progress") else "left")
    for item, task, wrong in rows:
        took = ""
        if task.get("startedAt") and task.get("completedAt"):
            took = f"{(task['completedAt'] - task['startedAt']) / 1000:.1f} s"
        table.add_row(
            ("  " if item.role != "batch" else "") + item.name,
            task["id"][:8],
            task["type"],
            status_text(task["status"]),
            f"{task['attempt']}/{task['maxAttempts']}",
            took,
            f"{float(task.get('progress') or 0):.0f}%",
            Text("ok", style="green") if not wrong else Text("; ".join(wrong), style="red"),
        )
    return table


def _print_plain(console: Console, lines: "queue.Queue[tuple[float, str, Any] | None]", named: threading.Event, demo: Demo, started: float) -> None:
    named.wait(10)
    last: dict[str, tuple[str, int]] = {}
    while (entry := lines.get()) is not None:
        t, kind, payload = entry
        stamp = f"{t - started:6.2f}s"
        if kind == "say":
            console.print(f"{stamp}  * {payload}", markup=False)
            continue
        if kind != "task.updated" or not isinstance(payload, dict):
            continue
        task = payload["task"]
        quarter = int(float(task.get("progress") or 0) // 25)
        if last.get(task["id"]) == (task["status"], quarter):
            continue  # progress inside the same quarter: keep the log short
        last[task["id"]] = (task["status"], quarter)
        name = demo.labels.get(task["id"], task["id"][:8])
        extra = f"  error={task['error']!r}" if task.get("error") and task["status"] in ("QUEUED", "FAILED") else ""
        console.print(
            f"{stamp}  {task['id'][:8]}  {name:<28} {task['status']:<9} {float(task.get('progress') or 0):5.1f}%"
            f"  try {task['attempt']}/{task['maxAttempts']}{extra}",
            markup=False,
        )


def run_demo(opts: SidecarOptions, live: bool) -> int:
    # Off a terminal rich would wrap at 80 columns; CI logs are wider.
    console = Console(highlight=False) if live else Console(highlight=False, width=140)
    started = time.monotonic()
    actions: list[str] = []
    with open_sidecar(opts) as client:
        ready = client.ready or {}
        console.print(f"sidecar pid {ready.get('pid')}, protocol {ready.get('protocolVersion')}, db {ready.get('dbPath')}", markup=False)
        if live:
            demo = Demo(client, actions.append)

            def render() -> Group:
                done = sum(1 for it in demo.items if (client.board.tasks.get(it.task_id) or {}).get("status") in TERMINAL)
                title = f"Playlistify demo: playlist import, {done}/{len(demo.items)} videos finished, {time.monotonic() - started:.1f} s"
                return Group(Text(title, style="bold"), *[Text("• " + a, style="cyan") for a in actions[-4:]],
                             board_view(client.board, labels=demo.labels, max_events=8))

            with Live(get_renderable=render, console=console, refresh_per_second=12, transient=False):
                demo.create()
                demo.drive()
        else:
            # Plain lines. Notifications go through a queue to a printer thread that starts once the
            # batch exists, so every line can carry the task's name (the first notifications arrive
            # before tasks.createMany has answered with the ids).
            lines: queue.Queue[tuple[float, str, Any] | None] = queue.Queue()
            named = threading.Event()

            def say(text: str) -> None:
                lines.put((time.monotonic(), "say", text))

            demo = Demo(client, say)
            client.add_listener(lambda method, params: lines.put((time.monotonic(), method, params)))
            printer = threading.Thread(target=_print_plain, args=(console, lines, named, demo, started), daemon=True)
            printer.start()
            try:
                demo.create()
            finally:
                named.set()
            demo.drive()
        rows = demo.check()
        if not live:
            lines.put(None)
            printer.join(5)
    console.print(summary_table(rows))
    elapsed = time.monotonic() - started
    if demo.problems:
        console.print(f"demo FAILED after {elapsed:.1f} s:", style="bold red")
        for p in demo.problems:
            console.print(f"  - {p}", markup=False)
        return 1
    mode = "task graphs" if demo.graph_mode else "parentId only (no task graphs in this sidecar)"
    console.print(f"demo OK in {elapsed:.1f} s: 4 downloads completed, the broken link failed after its retries, "
                  f"the long download was cancelled midway ({mode})", style="bold green")
    return 0
