"""Rendering: task tables with progress bars, the live board (tasks + notification stream), and the
one-line text of a notification used by plain output."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sidecar.harness.board import Board, Event

STATUS_STYLE = {
    "QUEUED": "cyan",
    "WAITING": "blue",
    "RUNNING": "yellow",
    "PAUSED": "magenta",
    "COMPLETED": "green",
    "FAILED": "bold red",
    "CANCELLED": "dim red",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def ordered(tasks: list[dict[str, Any]], rank: dict[str, int] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Tasks as (depth, task): roots oldest first, each followed by its children (a tree walk).
    ``rank`` (id -> position) orders siblings first, e.g. in the order the harness created them."""
    rank = rank or {}
    by_id = {t["id"]: t for t in tasks}
    children: dict[Any, list[dict[str, Any]]] = {}
    for t in tasks:
        parent = t.get("parentId") if t.get("parentId") in by_id else None
        children.setdefault(parent, []).append(t)
    for group in children.values():
        group.sort(key=lambda t: (rank.get(t["id"], len(rank)), t.get("createdAt") or 0, t["id"]))
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: Any, depth: int) -> None:
        for t in children.get(parent, []):
            out.append((depth, t))
            walk(t["id"], depth + 1)

    walk(None, 0)
    return out


def task_table(
    tasks: list[dict[str, Any]],
    title: str | None = None,
    labels: dict[str, str] | None = None,
    tree: bool = False,
) -> Table:
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False, box=None, show_edge=False)
    table.add_column("id", no_wrap=True)
    if labels is not None:
        table.add_column("name", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("message", overflow="ellipsis", no_wrap=True, max_width=48)
    rows = ordered(tasks, {k: i for i, k in enumerate(labels or {})}) if tree else [(0, t) for t in tasks]
    for depth, t in rows:
        progress = float(t.get("progress") or 0)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=100, completed=progress, width=20, complete_style=STATUS_STYLE.get(t.get("status", ""), "yellow"), finished_style="green"), f"{progress:5.1f}%")
        note = t.get("error") or t.get("message") or ""
        indent = ("  " * (depth - 1) + "└ ") if depth else ""
        cells: list[RenderableType] = [Text(indent + t["id"][:8])]
        if labels is not None:
            cells.append(labels.get(t["id"], ""))
        cells += [
            str(t.get("type")),
            status_text(str(t.get("status"))),
            bar,
            f"{t.get('attempt', 0)}/{t.get('maxAttempts', '?')}",
            Text(str(note), style="red" if t.get("error") else ""),
        ]
        table.add_row(*cells)
    return table


def event_line(ev: Event, started: float, labels: dict[str, str] | None = None) -> str:
    return f"{ev.t - started:7.2f}s  " + notification_text(ev.method, ev.params, labels)


def notification_text(method: str, params: Any, labels: dict[str, str] | None = None) -> str:
    if method == "task.updated" and isinstance(params, dict) and isinstance(params.get("task"), dict):
        t = params["task"]
        name = (labels or {}).get(t.get("id", ""), "")
        parts = [f"task.updated #{params.get('seq')}", t.get("id", "?")[:8]]
        if name:
            parts.append(name)
        parts += [str(t.get("type")), str(t.get("status")), f"{float(t.get('progress') or 0):.0f}%", f"try {t.get('attempt')}/{t.get('maxAttempts')}"]
        if t.get("message"):
            parts.append(repr(t["message"]))
        if t.get("error"):
            parts.append(f"error={t['error']!r}")
        return "  ".join(parts)
    if method == "sidecar.ready" and isinstance(params, dict):
        return f"sidecar.ready pid {params.get('pid')} protocol {params.get('protocolVersion')} db {params.get('dbPath')} recovered {json.dumps(params.get('recovered'))}"
    text = json.dumps(params, ensure_ascii=False)
    return f"{method} {text if len(text) < 200 else text[:197] + '...'}"


def board_view(
    board: Board,
    labels: dict[str, str] | None = None,
    max_tasks: int = 14,
    max_events: int = 6,
    title: str | None = None,
) -> RenderableType:
    """The live view: the task table (tree-ordered, newest roots kept when there are many) and the
    last notifications."""
    tasks, events = board.snapshot()
    rows = ordered(tasks, {k: i for i, k in enumerate(labels or {})})
    hidden = max(0, len(rows) - max_tasks)
    shown_ids = {t["id"] for _, t in rows[hidden:]}
    table = task_table([t for _, t in rows if t["id"] in shown_ids], title=title, labels=labels, tree=True)
    parts: list[RenderableType] = [table]
    if hidden:
        parts.append(Text(f"  ({hidden} older task(s) not shown)", style="dim"))
    parts.append(Text(f"notifications ({len(events)}):" + (f"  seq gaps {board.gaps}" if board.gaps else ""), style="bold"))
    for ev in events[-max_events:]:
        parts.append(Text(event_line(ev, board.started, labels), style="dim", overflow="ellipsis", no_wrap=True))
    return Group(*parts)
