"""Task commands and the graph rules: parents and children, dependencies, cancel, retry, pause.

Everything here runs inside the engine's transaction (see :mod:`sidecar.domain.engine`), so a change
and all of its consequences (a failed child failing its parent, a finished dependency releasing its
dependents, ...) commit together or not at all — a crash never leaves a graph half-updated.

"Waits for" is the one relation behind both cycles and settling: a task waits for its
dependencies (before it runs) and for its children (after its handler returned).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from sidecar.domain.states import TERMINAL, UNFINISHED, Status
from sidecar.errors import DependencyCycle, InvalidParams, InvalidTransition, TaskNotFound
from sidecar.future import Future
from sidecar.handlers.context import STOP_PRECEDENCE, strongest_stop
from sidecar.persistence import store
from sidecar.persistence.store import Row, Task

if TYPE_CHECKING:
    from sidecar.domain.engine import Engine, Running, Tx

# What a running task says while it is being stopped. Once it has ended, its last own message
# comes back (Graph.message_after_stop).
CANCELLING = "cancelling"
PAUSING = "pausing"
FAILING = "failing: a child failed"
STOPPING_TO_RERUN = "stopping, to run again"
STOP_MESSAGES = frozenset({CANCELLING, PAUSING, FAILING, STOPPING_TO_RERUN})

_UNFINISHED = frozenset(s.value for s in UNFINISHED)
_TERMINAL = frozenset(s.value for s in TERMINAL)


EVERYTHING_FINISHED = 2**63 - 1  # a completed_at cutoff no timestamp reaches
# tasks.prune: how long one transaction may spend deleting before the rest waits for the next, and
# how many finished roots (each with its subtree) one DELETE takes. Running tasks' reports, claims
# and creates wait about this long, plus SQLite's inline checkpoint when a commit brings the WAL
# past its threshold (~140 ms on a year-old database; 50 ms / 500 roots: creates waited 2.6x longer)
PRUNE_STEP_BUDGET_S = 0.02
PRUNE_ROOTS_PER_STATEMENT = 100


def _parents_first(new: list[int], parent_of: dict[int, str | None], index_of: dict[str, int]) -> list[int]:
    """``new`` (item indexes) ordered so that a parent created in the same call comes before its
    children. A loop, not a recursive closure: a nested function that calls itself is a reference
    cycle, which every create left for the garbage collector."""
    depth: dict[int, int] = {}
    for i in new:
        path: list[int] = []
        j = i
        while j not in depth:
            parent = parent_of[j]
            if parent is None or parent not in index_of:
                depth[j] = 0
                break
            path.append(j)
            j = index_of[parent]
        level = depth[j]
        for k in reversed(path):
            level += 1
            depth[k] = level
    return sorted(new, key=depth.__getitem__)


def _status(row: Row) -> str:
    return row[2]


def merge_child_counts(result: Any, counts: dict[str, int]) -> Any:
    summary = {
        "completed": counts.get("COMPLETED", 0),
        "failed": counts.get("FAILED", 0),
        "cancelled": counts.get("CANCELLED", 0),
    }
    if result is None:
        return {"children": summary}
    if isinstance(result, dict):
        return {**result, "children": summary}
    return {"value": result, "children": summary}


class Graph:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    # ------------------------------------------------------------ helpers

    def row(self, tx: "Tx", task_id: str) -> Row:
        row = store.get(tx.conn, task_id)
        if row is None:
            raise TaskNotFound(task_id)
        return row

    def move(self, tx: "Tx", task_id: str, target: Status, **sets: Any) -> Row | None:
        row = store.transition(tx.conn, task_id, target, tx.now, **sets)
        if row is not None:
            tx.moved(row)
            tx.announce(row)
        return row

    def end(self, tx: "Tx", task_id: str, target: Status, *, and_descendants: bool = False, **sets: Any) -> Row | None:
        """Move to a terminal status (``and_descendants``: cancelling its unfinished descendants),
        then settle everything that waited on this task."""
        sets.setdefault("completed_at", tx.now)
        row = self.move(tx, task_id, target, **sets)
        if row is not None:
            if and_descendants:
                self._cancel_descendants(tx, task_id)
            self.settle(tx, self.consequences(tx, row))
        return row

    def _stop_running(self, tx: "Tx", task_id: str, reason: str, message: str) -> Row | None:
        """Signal a running handler; it ends in the reason's status when it stops (or is abandoned)."""
        running = self.engine.running(task_id)
        if running is None:
            return None
        applied = running.ctx.stop_reason
        if applied is not None and STOP_PRECEDENCE[reason] <= STOP_PRECEDENCE[applied]:
            return None  # a stop that decides as much was asked already
        pending = tx.stopping.get(task_id)  # asked in this transaction (cancel() marks before calling)
        if pending is not None and STOP_PRECEDENCE[reason] < STOP_PRECEDENCE[pending]:
            return None  # a cancel then a pause in one transaction: the cancel stands, row included
        tx.stopping[task_id] = reason
        current = store.message_of(tx.conn, task_id)
        if current not in STOP_MESSAGES:  # a stop asked again keeps what the first one replaced
            running.message_before_stop = current
        tx.after.append(partial(running.ctx.request_stop, reason))
        self.engine.abandon_later(running.ctx)
        if reason in ("cancel", "pause"):  # the user's: kept with the row, in case of a crash
            row = store.set_stop_requested(tx.conn, task_id, reason, message, tx.now)
        else:
            row = store.set_message(tx.conn, task_id, message, tx.now)
        if row is not None:
            tx.announce(row)
        return row

    def message_after_stop(self, tx: "Tx", task_id: str, running: "Running") -> dict[str, Any]:
        """The message a task stopped (or asked to stop) shows once it ends: its last own message
        instead of "cancelling"/"pausing", unless its handler said something since."""
        if store.message_of(tx.conn, task_id) not in STOP_MESSAGES:
            return {}
        return {"message": running.message_before_stop}

    def stopping_reason(self, tx: "Tx", task_id: str) -> str | None:
        """The strongest stop asked of a task: in this transaction (applied after its commit) or before."""
        running = self.engine.running(task_id)
        return strongest_stop(tx.stopping.get(task_id), running.ctx.stop_reason if running is not None else None)

    # ------------------------------------------------------------ create

    def create_many(self, tx: "Tx", items: list[dict[str, Any]], prefix_items: bool = True) -> list[Task]:
        def prefix(i: int) -> str:
            return f"tasks[{i}]." if prefix_items else ""

        conn = tx.conn
        refs: dict[str, int] = {}
        for i, item in enumerate(items):
            ref = item.get("ref")
            if ref is not None:
                if ref in refs:
                    raise InvalidParams(f"{prefix(i)}ref", f"duplicate ref {ref!r}")
                refs[ref] = i

        # idempotency: an existing key (or one repeated in this call) names the existing task
        ids: list[str] = []
        existing_rows: dict[int, Row] = {}
        keys: dict[str, int] = {}
        fresh = store.new_task_ids(len(items))
        for i, item in enumerate(items):
            key = item.get("idempotencyKey")
            if key is not None:
                if key in keys:
                    ids.append(ids[keys[key]])
                    existing_rows[i] = existing_rows.get(keys[key]) or ()
                    continue
                keys[key] = i
                found = store.find_by_idempotency_key(conn, key)
                if found is not None:
                    ids.append(found[0])
                    existing_rows[i] = found
                    continue
            ids.append(fresh[i])
        new = [i for i in range(len(items)) if i not in existing_rows]

        # resolve parentId / dependsOn: a ref of this call, else an existing task id
        wanted: set[str] = set()
        for i in new:
            item = items[i]
            parent = item.get("parentId")
            if parent is not None and parent not in refs:
                wanted.add(parent)
            for dep in item.get("dependsOn", ()):
                if dep not in refs:
                    wanted.add(dep)
        statuses = store.existing_ids(conn, sorted(wanted)) if wanted else {}
        for i, row in existing_rows.items():  # a ref on an item that named an existing task
            if row:
                statuses[ids[i]] = row[2]

        def resolve(value: str, i: int, field: str) -> str:
            if value in refs:
                return ids[refs[value]]
            if value in statuses:
                return value
            raise InvalidParams(f"{prefix(i)}{field}", f"no task with id {value!r} (nor a ref of this call)")

        parent_of: dict[int, str | None] = {}
        deps_of: dict[int, list[str]] = {}
        for i in new:
            item = items[i]
            parent = item.get("parentId")
            if parent is not None:
                parent = resolve(parent, i, "parentId")
                if statuses.get(parent) in _TERMINAL:
                    raise InvalidTransition(
                        parent, statuses[parent], "parent", f"a {statuses[parent]} task takes no new children",
                    )
            parent_of[i] = parent
            deps = item.get("dependsOn")
            deps_of[i] = list(dict.fromkeys(
                resolve(d, i, f"dependsOn[{j}]") for j, d in enumerate(deps)
            )) if deps else []
        # A new task can close a loop only through a dependency or a parent named by ref: a batch of
        # children of existing tasks (a playlist's 5,000 videos) needs no search.
        for i in new:  # (a loop, not any() over a generator: this runs for every create)
            if deps_of[i] or items[i].get("parentId") in refs:
                self._refuse_cycles(tx, items, ids, new, parent_of, deps_of)
                break

        engine = self.engine
        waiting: list[str] = []
        rows: list[Row] = []
        order = _parents_first(new, parent_of, {ids[i]: i for i in new})  # the foreign key is checked at once
        for i in order:
            item = items[i]
            spec = engine.registry.get(item["type"])
            assert spec is not None
            deps = deps_of[i]
            ready = not deps or all(statuses.get(d) == "COMPLETED" for d in deps)
            run_at = item.get("runAt")
            rows.append(store.new_row(
                task_id=ids[i],
                type=item["type"],
                status=Status.QUEUED if ready else Status.WAITING,
                parent_id=parent_of[i],
                details_json=store.dumps(item.get("details", {})),
                priority=item.get("priority", 0),
                max_attempts=item.get("maxAttempts", spec.max_attempts),
                run_at=run_at if run_at is not None else tx.now,
                idempotency_key=item.get("idempotencyKey"),
                now=tx.now,
                depends_on_json=store.dumps(deps) if deps else None,
                on_child_failure=item.get("onChildFailure", "fail"),
                weight=float(item.get("weight", 1)),
            ))
            if not ready:
                waiting.append(ids[i])
        # A lone new task that is due, with a slot free and nothing else due, is written RUNNING
        # (Engine.may_start_on_insert): one statement, not an insert and a claim. Its QUEUED
        # version is still announced first and is what the caller is answered (see the end).
        written = rows
        start = (
            len(rows) == 1 and rows[0][2] == Status.QUEUED and rows[0][store.I_RUN_AT] <= tx.now
            and engine.may_start_on_insert(tx, rows[0][store.I_TYPE])
        )
        if start:
            written = [store.started_row(rows[0], tx.now)]
        store.insert_rows(conn, written)  # parents first: the foreign key is checked at once
        added: dict[tuple[str, str], int] = {}
        for i, row in zip(order, rows):
            key = (row[store.I_TYPE], row[2])
            added[key] = added.get(key, 0) + 1
            tx.announce(row, store.task_from_new_row(row, items[i].get("details", {}), deps_of[i]))
        for (type_, status), n in added.items():
            tx.count(type_, status, n)
        for i in new:
            if deps_of[i]:
                store.insert_deps(conn, ids[i], deps_of[i])
        if not start:
            engine.wake()
        self.settle(tx, waiting)  # a dependency already FAILED/CANCELLED ends them at once
        out: list[Task] = []
        for i, task_id in enumerate(ids):
            latest = tx.latest.get(task_id)
            if latest is None:
                latest = store.task_from_row(existing_rows[i] or self.row(tx, task_id))
            out.append(latest)
        if start:  # after the answer was taken: the caller gets the QUEUED version
            i = order[0]
            engine.started_on_insert(
                tx, written[0], store.task_from_new_row(written[0], items[i].get("details", {}), deps_of[i])
            )
        return out

    def _refuse_cycles(
        self,
        tx: "Tx",
        items: list[dict[str, Any]],
        ids: list[str],
        new: list[int],
        parent_of: dict[int, str | None],
        deps_of: dict[int, list[str]],
    ) -> None:
        """Depth-first search of "waits for" edges from every new task; existing tasks are read lazily."""
        new_index = {ids[i]: i for i in new}
        new_children: dict[str, list[str]] = {}
        for i in new:
            if parent_of[i] is not None:
                new_children.setdefault(parent_of[i], []).append(ids[i])
        def edges(node: str) -> Iterable[str]:
            if node in new_index:
                yield from deps_of[new_index[node]]
            else:
                yield from store.waits_for(tx.conn, node)
            yield from new_children.get(node, ())

        def label(node: str) -> Any:
            if node in new_index:
                i = new_index[node]
                return {"index": i, "ref": items[i].get("ref")}
            return node

        done: set[str] = set()
        for start in new:
            root = ids[start]
            if root in done:
                continue
            path: list[str] = [root]
            on_path = {root}
            stack = [iter(edges(root))]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    finished = path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                    continue
                if nxt in on_path:
                    loop = path[path.index(nxt):] + [nxt]
                    raise DependencyCycle([label(n) for n in loop])
                if nxt in done:
                    continue
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(edges(nxt)))

    # ------------------------------------------------------------ settling

    def consequences(self, tx: "Tx", row: Row, dependents: list[str] | None = None) -> list[str]:
        """What must be looked at after ``row`` became terminal: dependents (``dependents``, when
        the caller looked them up already) and the parent."""
        task_id = row[0]
        status = _status(row)
        todo = store.unfinished_dependents(tx.conn, task_id) if dependents is None else dependents
        parent_id = row[store.I_PARENT]
        if parent_id is None:
            return todo
        parent = store.get(tx.conn, parent_id)
        if parent is None or _status(parent) in _TERMINAL:
            return todo
        if self.stopping_reason(tx, parent_id) == "cancel":
            # Being cancelled: it ends CANCELLED whatever its children do. Settled now, a waiting
            # parent whose last children were just cancelled would complete or fail instead.
            return todo
        if status in ("FAILED", "CANCELLED") and parent[store.I_POLICY] == "fail":
            verb = "failed" if status == "FAILED" else "was cancelled"
            detail = f": {row[store.I_ERROR]}" if status == "FAILED" and row[store.I_ERROR] else ""
            self._fail_parent(tx, parent, f"child {task_id} ({row[store.I_TYPE]}) {verb}{detail}")
            return todo
        todo.append(parent_id)
        return todo

    def recount_completed(self, tx: "Tx", parent_id: str, counts: dict[str, int]) -> None:
        """A COMPLETED parent's ``result.children`` kept true when a child of it is retried (its
        status stays: COMPLETED is terminal). Called with the counts the engine's recomputation
        of parents' progress has just read, so a retried batch of 5,000 videos is recounted as
        often as its progress would be, not once per video."""
        parent = store.get(tx.conn, parent_id)
        if parent is None or _status(parent) != "COMPLETED":
            return
        stored = orjson.loads(parent[store.I_RESULT]) if parent[store.I_RESULT] else None
        result = merge_child_counts(stored, counts)
        if result == stored:
            return
        row = store.set_completed_result(tx.conn, parent_id, store.dumps(result), tx.now)
        if row is not None:
            tx.announce(row)

    def ended_outside(self, tx: "Tx", task_ids: list[str]) -> None:
        """Tasks a bare UPDATE ended (recovery after a crash): cancel their unfinished
        descendants and settle what waited on them, as :meth:`end` does."""
        for task_id in task_ids:
            row = store.get(tx.conn, task_id)
            if row is None or _status(row) not in _TERMINAL:
                continue
            tx.ended.append(row)
            self._cancel_descendants(tx, task_id)
            self.settle(tx, self.consequences(tx, row))

    def _fail_parent(self, tx: "Tx", parent: Row, error: str) -> None:
        parent_id = parent[0]
        if _status(parent) == "RUNNING":
            self._stop_running(tx, parent_id, "cancel", FAILING)
        tx.stopping[parent_id] = "cancel"  # its children's cancellations must not re-fail it
        row = self.move(tx, parent_id, Status.FAILED, error=error, completed_at=tx.now)
        self._cancel_descendants(tx, parent_id)
        if row is not None:
            self.settle(tx, self.consequences(tx, row))

    def settle(self, tx: "Tx", task_ids: Iterable[str]) -> None:
        """Re-evaluate waiting tasks: release, complete, or fail them as their graph now says."""
        work = deque(task_ids)
        while work:
            task_id = work.popleft()
            row = store.get(tx.conn, task_id)
            if row is None:
                continue
            status = _status(row)
            handler_done = row[store.I_HANDLER_DONE]
            if status == "PAUSED" and not handler_done:
                _, _, bad = store.dependency_summary(tx.conn, task_id)
                if bad is not None:
                    work.extend(self._dependency_ended(tx, task_id, bad))
                continue
            if status != "WAITING":
                continue
            if not handler_done:
                total, completed, bad = store.dependency_summary(tx.conn, task_id)
                if bad is not None:
                    work.extend(self._dependency_ended(tx, task_id, bad))
                elif completed == total:
                    self.move(tx, task_id, Status.QUEUED, run_at=max(tx.now, row[store.COLUMNS.index("run_at")]))
                    self.engine.wake()
                continue
            counts, _ = store.children_summary(tx.conn, task_id)
            if any(counts.get(s, 0) for s in _UNFINISHED):
                continue
            failed, cancelled = counts.get("FAILED", 0), counts.get("CANCELLED", 0)
            if row[store.I_POLICY] == "fail" and (failed or cancelled):
                done = self.move(
                    tx, task_id, Status.FAILED, completed_at=tx.now,
                    error=f"{failed} child task(s) failed, {cancelled} cancelled",
                )
            else:
                stored = row[store.I_RESULT]
                result = merge_child_counts(orjson.loads(stored) if stored else None, counts)
                done = self.move(
                    tx, task_id, Status.COMPLETED, completed_at=tx.now, progress=100,
                    result=store.dumps(result),
                )
            if done is not None:
                work.extend(self.consequences(tx, done))

    def _dependency_ended(self, tx: "Tx", task_id: str, bad: tuple[str, str]) -> list[str]:
        dep_id, dep_status = bad
        target = Status.FAILED if dep_status == "FAILED" else Status.CANCELLED
        verb = "failed" if dep_status == "FAILED" else "was cancelled"
        row = self.move(tx, task_id, target, completed_at=tx.now, error=f"dependency {dep_id} {verb}")
        if row is None:
            return []
        if row[store.I_HANDLER_DONE] == 0 and store.has_children(tx.conn, task_id):
            tx.stopping[task_id] = "cancel"
            self._cancel_descendants(tx, task_id)
        return self.consequences(tx, row)

    # ------------------------------------------------------------ a handler returned

    def handlers_succeeded(self, tx: "Tx", succeeded: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Tasks whose handlers returned, in the order they did: ``(task_id, result_json, extra)``.

        A plain task (no children) completes; a parent waits for its children. Consecutive plain
        tasks are completed together (:func:`store.complete_many`): the same rows and
        announcements as one at a time, in a few statements instead of three per task.
        """
        parents, dependents = store.parents_and_dependents(tx.conn, [s[0] for s in succeeded])
        if parents:
            # settling a parent may end tasks that wait for the others: look them up after it
            self._complete_plain_and_parents(tx, succeeded, parents)
            return
        # Only these tasks' completions are written before the dependents are used. A dependent
        # that is itself among them (its dependency was retried while it ran) is then settled as
        # the COMPLETED task it has become, which settle() leaves alone.
        self._complete_plain(tx, [(t, r, e.get("message", store.KEEP_MESSAGE)) for t, r, e in succeeded], dependents)

    def _complete_plain_and_parents(
        self, tx: "Tx", succeeded: list[tuple[str, str, dict[str, Any]]], parents: set[str]
    ) -> None:
        plain: list[tuple[str, str, Any]] = []
        for task_id, result_json, extra in succeeded:
            if task_id not in parents:
                plain.append((task_id, result_json, extra.get("message", store.KEEP_MESSAGE)))
                continue
            self._complete_plain(tx, plain)
            plain = []
            self._parent_handler_succeeded(tx, task_id, result_json, extra)
        self._complete_plain(tx, plain)

    def _complete_plain(
        self, tx: "Tx", plain: list[tuple[str, str, Any]], dependents: dict[str, list[str]] | None = None
    ) -> None:
        """Complete tasks without children; ``dependents``: their unfinished dependents, if the
        caller looked them up already."""
        if not plain:
            return
        moved = {row[0]: row for row in store.complete_many(tx.conn, plain, tx.now)}
        ended = [moved[task_id] for task_id, _, _ in plain if task_id in moved]
        for row in ended:
            tx.moved(row)
            tx.announce(row)
        if dependents is None:
            dependents = store.unfinished_dependents_of(tx.conn, [row[0] for row in ended])
        todo: list[str] = []
        for row in ended:
            todo += self.consequences(tx, row, dependents.get(row[0], []))
        self.settle(tx, todo)

    def _parent_handler_succeeded(self, tx: "Tx", task_id: str, result_json: str, extra: dict[str, Any]) -> None:
        counts, progress = store.children_summary(tx.conn, task_id)
        if any(counts.get(s, 0) for s in _UNFINISHED):
            extra.pop("progress", None)
            self.move(
                tx, task_id, Status.WAITING, handler_done=1, result=result_json, progress=progress or 0, **extra,
            )
            return
        self.move(tx, task_id, Status.WAITING, handler_done=1, result=result_json, **extra)
        self.settle(tx, [task_id])

    # ------------------------------------------------------------ user commands

    def cancel(self, tx: "Tx", task_id: str) -> Task:
        row = self.row(tx, task_id)
        status = _status(row)
        if status in _TERMINAL:
            raise InvalidTransition(task_id, status, Status.CANCELLED)
        tx.stopping[task_id] = "cancel"
        if status == "RUNNING":
            self._stop_running(tx, task_id, "cancel", CANCELLING)
            self._cancel_descendants(tx, task_id)
        else:
            self._cancel_descendants(tx, task_id)
            self.end(tx, task_id, Status.CANCELLED)
        return tx.latest.get(task_id) or store.task_from_row(self.row(tx, task_id))

    def _cancel_descendants(self, tx: "Tx", task_id: str) -> None:
        for child in store.descendants(tx.conn, task_id):
            child_id, status = child[0], _status(child)
            if status in _TERMINAL:
                continue
            tx.stopping[child_id] = "cancel"
            if status == "RUNNING":
                self._stop_running(tx, child_id, "cancel", CANCELLING)
            else:
                self.end(tx, child_id, Status.CANCELLED)

    def retry(self, tx: "Tx", task_id: str) -> Task:
        row = self.row(tx, task_id)
        status = _status(row)
        if status not in ("FAILED", "CANCELLED"):
            raise InvalidTransition(task_id, status, Status.QUEUED, "only FAILED or CANCELLED tasks can be retried")
        below = store.descendants(tx.conn, task_id)
        again = [row] + [d for d in below if _status(d) in ("FAILED", "CANCELLED")]
        for d in below:
            running = self.engine.running(d[0]) if _status(d) == "RUNNING" else None
            if running is not None and running.ctx.stop_reason == "cancel":
                # Still stopping for the failure being retried: it must not end CANCELLED (that
                # would fail the parent again) but go back to QUEUED when it stops, as at a shutdown.
                running.ctx.stop_reason = "shutdown"
                moved = store.set_stop_requested(tx.conn, d[0], None, STOPPING_TO_RERUN, tx.now)
                if moved is not None:
                    tx.announce(moved)
        reopened: list[str] = []
        for r in again:
            # A stop asked in this transaction (the failure being retried cancels the parent) must
            # not outlive the retry: the parent would ignore its children's reports and wait forever.
            tx.stopping.pop(r[0], None)
            handler_done = r[store.I_HANDLER_DONE]
            total, completed, _ = store.dependency_summary(tx.conn, r[0])
            target = Status.WAITING if handler_done or completed < total else Status.QUEUED
            sets: dict[str, Any] = dict(
                attempt=0, error=None, run_at=tx.now, completed_at=None, started_at=None,
            )
            if not handler_done:
                sets.update(result=None, progress=0, message=None)
            self.move(tx, r[0], target, **sets)
            reopened.append(r[0])
        self.engine.wake()
        # deepest first, so a parent sees its reopened children
        self.settle(tx, reversed(reopened))
        return tx.latest.get(task_id) or store.task_from_row(self.row(tx, task_id))

    def pause(self, tx: "Tx", task_id: str) -> Task:
        row = self.row(tx, task_id)
        status = _status(row)
        if status in _TERMINAL:
            raise InvalidTransition(task_id, status, Status.PAUSED)
        if status in ("QUEUED", "WAITING"):
            self.move(tx, task_id, Status.PAUSED)
        elif status == "RUNNING":
            self._stop_running(tx, task_id, "pause", PAUSING)
        self.pause_descendants(tx, task_id)
        return tx.latest.get(task_id) or store.task_from_row(self.row(tx, task_id))

    def pause_descendants(self, tx: "Tx", task_id: str) -> None:
        """Pause the unfinished descendants of a task (tasks.pause; or one whose run has just ended
        PAUSED, for the children it spawned while pausing)."""
        for r in store.descendants(tx.conn, task_id):
            s = _status(r)
            if s in ("QUEUED", "WAITING"):
                self.move(tx, r[0], Status.PAUSED)
            elif s == "RUNNING":
                self._stop_running(tx, r[0], "pause", PAUSING)

    def resume(self, tx: "Tx", task_id: str) -> Task:
        row = self.row(tx, task_id)
        paused = [r for r in [row, *store.descendants(tx.conn, task_id)] if _status(r) == "PAUSED"]
        if not paused:
            raise InvalidTransition(task_id, _status(row), Status.QUEUED, "nothing in this subtree is paused")
        waiting: list[str] = []
        for r in paused:
            total, completed, _ = store.dependency_summary(tx.conn, r[0])
            if r[store.I_HANDLER_DONE] or completed < total:
                self.move(tx, r[0], Status.WAITING)
                waiting.append(r[0])
            else:
                self.move(tx, r[0], Status.QUEUED)
        self.engine.wake()
        self.settle(tx, reversed(waiting))
        return tx.latest.get(task_id) or store.task_from_row(self.row(tx, task_id))

    def delete(self, tx: "Tx", task_id: str) -> dict[str, int]:
        row = self.row(tx, task_id)
        status = _status(row)
        subtree = store.descendants(tx.conn, task_id)
        if status not in _TERMINAL or any(_status(r) not in _TERMINAL for r in subtree):
            raise InvalidTransition(task_id, status, "DELETED", "only finished tasks (and subtrees) can be deleted")
        store.delete(tx.conn, task_id)
        tx.deleted.extend([task_id, *(r[0] for r in subtree)])
        return {"deleted": 1 + len(subtree)}

    def prune_step(
        self, tx: "Tx", cutoff: int, statuses: list[str], budget_s: float, kept: list[str]
    ) -> tuple[int, bool]:
        """Delete finished tasks completed before ``cutoff`` until none is left or ``budget_s``
        has passed; returns how many went (their subtrees included) and whether none is left.
        ``kept`` gathers the roots left because tasks below them still run, so that no later
        statement reads them again (enough of them first in line stopped a prune early)."""
        started = time.monotonic()
        deleted: list[str] = []
        finished = True
        while True:
            pruned = store.prune(tx.conn, statuses, cutoff, limit=PRUNE_ROOTS_PER_STATEMENT, skip=kept)
            if not pruned.deleted and not pruned.kept:
                break
            deleted.extend(pruned.deleted)
            kept.extend(pruned.kept)
            if time.monotonic() - started >= budget_s:
                finished = False
                break
        tx.deleted.extend(deleted)
        return len(deleted), finished

    def prune_in_steps(self, older_than_ms: int, statuses: list[str]) -> "Future[dict[str, int]]":
        """``tasks.prune``: one transaction after another, each taking at most ~PRUNE_STEP_BUDGET_S,
        with whatever else waits for the engine between them; answered once none is left.

        Deleting costs ~45 us a task in a database of a year's history, checkpoints included: 55,000
        finished tasks in one transaction held every other write (progress, claims, creates) for
        2.4 s; in steps, a create waits ~80 ms. Each step commits and announces its
        ``task.deleted`` before the next; all of them use the cutoff of the first, so a task that
        finishes meanwhile is kept unless "every finished task" (``olderThanMs`` 0) was asked."""
        answer: Future[dict[str, int]] = Future()
        cutoff: int | None = None
        total = 0
        kept: list[str] = []

        def step(tx: "Tx") -> tuple[int, bool]:
            nonlocal cutoff
            if cutoff is None:
                cutoff = prune_cutoff(tx.now, older_than_ms)
            return self.prune_step(tx, cutoff, statuses, PRUNE_STEP_BUDGET_S, kept)

        def stepped(done: "Future[tuple[int, bool]]") -> None:
            nonlocal total
            try:
                deleted, finished = done.result()
                total += deleted
                if not finished:
                    self.engine.submit(step).add_done_callback(stepped)
                    return
            except BaseException as exc:  # noqa: BLE001 - the caller's answer carries it
                answer.set_exception(exc)
                return
            answer.set_result({"deleted": total})

        self.engine.submit(step).add_done_callback(stepped)
        return answer


def prune_cutoff(now: int, older_than_ms: int) -> int:
    """The ``completed_at`` before which ``tasks.prune`` deletes. 0 means every finished task: a
    task that failed in this very millisecond (or before the wall clock stepped back) is not
    "older than now", and the caller still expects it gone."""
    return now - older_than_ms if older_than_ms else EVERYTHING_FINISHED


def build_tree(root: Row, rows: list[Row]) -> dict[str, Any]:
    """Nest descendant rows (parents first) under ``root``; each node gets ``childCounts``."""
    nodes: dict[str, dict[str, Any]] = {}

    def node(row: Row) -> dict[str, Any]:
        task = store.task_from_row(row)
        task["children"] = []
        task["childCounts"] = {}
        nodes[row[0]] = task
        return task

    top = node(root)
    for row in rows:
        child = node(row)
        parent = nodes.get(row[store.I_PARENT])
        if parent is not None:
            parent["children"].append(child)
            parent["childCounts"][child["status"]] = parent["childCounts"].get(child["status"], 0) + 1
    return top
