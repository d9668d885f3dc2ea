"""The short commands of interactive and line mode (``create demo.sleep seconds=3``, ``list``...).

``Commands.execute(line)`` runs one command line and returns what to show (rich renderables);
it raises ``Quit`` for ``quit``, ``CommandError`` for a command it cannot run (unknown, bad
argument) and ``CommandFailed`` (with what to show) when the sidecar answered with an error. Task
ids may be abbreviated to any unique prefix of a known id.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Callable

from rich.console import RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from sidecar.harness.board import AmbiguousId
from sidecar.harness.client import Client, RpcError, SidecarGone
from sidecar.harness.view import status_text, task_table

HELP = """\
commands (task ids may be shortened to a unique prefix):
  create TYPE [key=value ...] [--priority=N] [--parent=ID] [--max-attempts=N] [--PARAM=value]
                         key=value go to details (values parsed as JSON when they parse: 3, true, [1,2], "x");
                         --PARAM=value sets a tasks.create parameter (e.g. --idempotencyKey=abc)
  list [STATUS ...] [--type=T,U] [--parent=ID] [--limit=N]   tasks, newest first
  get ID                 the whole task
  cancel ID | retry ID | pause ID | resume ID | delete ID
  tree ID                the task and its descendants (tasks.tree)
  wait ID [STATUS ...] [--timeout=S]   block until the task is terminal (or reaches one of the STATUSes)
  stats | info | ping
  call METHOD [{json params}]      any method
  raw {json}             send a message; jsonrpc and id are added when missing
  help | quit"""

# Completion after ``call`` uses the running sidecar's own list (``rpc.discover``, the method
# table); this is only the fallback for a sidecar that does not answer it. A test keeps it equal
# to the table.
METHOD_NAMES = [
    "system.ping", "system.info", "system.shutdown", "tasks.create", "tasks.createMany", "tasks.get",
    "tasks.list", "tasks.stats", "tasks.cancel", "tasks.retry", "tasks.delete", "tasks.prune",
    "tasks.pause", "tasks.resume", "tasks.tree", "queue.pause", "queue.resume", "queue.setConcurrency",
    "queue.status", "rpc.discover",
]
_FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


def this_run(history: list[str]) -> list[str]:
    """The statuses of a task since it was last retried: a status it reached before the retry
    (CANCELLED, say) is not what ``wait`` after ``retry`` waits for."""
    start = 0
    for index in range(1, len(history)):
        if history[index - 1] in _FINISHED and history[index] not in _FINISHED:
            start = index
    return history[start:]


COMMANDS = ["create", "list", "get", "cancel", "retry", "pause", "resume", "delete", "tree", "wait",
            "stats", "info", "ping", "call", "raw", "help", "quit", "exit"]
ID_COMMANDS = {"get", "cancel", "retry", "pause", "resume", "delete", "tree", "wait"}
_CREATE_ALIASES = {"parent": "parentId", "max-attempts": "maxAttempts", "key": "idempotencyKey", "run-at": "runAt",
                   "depends-on": "dependsOn", "on-child-failure": "onChildFailure"}


class Quit(Exception):
    pass


class CommandError(ValueError):
    pass


class CommandFailed(Exception):
    """The sidecar answered the command with a JSON-RPC error. ``output`` is what to show; line
    mode counts the command as failed (exit 1), the prompt just shows it."""

    def __init__(self, output: list[RenderableType]):
        super().__init__(" ".join(str(item) for item in output))
        self.output = output


def _number(option: str, value: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise CommandError(f"--{option}={value}: not {'an integer' if kind is int else 'a number'}") from None


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true, null, lists, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_args(words: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Positional words, ``key=value`` pairs, and ``--option=value`` pairs."""
    positional, pairs, options = [], {}, {}
    for w in words:
        if w.startswith("--"):
            key, _, value = w[2:].partition("=")
            options[key] = value if _ else "true"
        elif "=" in w and not w.startswith("="):
            key, _, value = w.partition("=")
            pairs[key] = value
        else:
            positional.append(w)
    return positional, pairs, options


class Commands:
    def __init__(self, client: Client, width: Callable[[], int] | None = None):
        self.client = client
        self.task_types: list[str] = []
        self.method_names: list[str] = list(METHOD_NAMES)
        self._width = width

    def load_info(self) -> dict[str, Any]:
        info = self.client.call("system.info")
        self.task_types = [h.get("type") for h in info.get("handlers", []) if isinstance(h, dict) and h.get("type")]
        return info

    def load_methods(self) -> list[str]:
        """The method names from the sidecar's ``rpc.discover`` (plus rpc.discover itself, which its
        document does not list); the built-in list when it does not answer."""
        try:
            doc = self.client.call("rpc.discover", timeout=10)
        except (RpcError, TimeoutError):
            return self.method_names
        names = [m.get("name") for m in (doc or {}).get("methods", []) if isinstance(m, dict) and isinstance(m.get("name"), str)]
        if names:
            self.method_names = sorted(set(names) | {"rpc.discover"})
        return self.method_names

    def resolve(self, prefix: str) -> str:
        try:
            return self.client.board.resolve(prefix)
        except AmbiguousId as exc:
            raise CommandError(str(exc)) from None

    def execute(self, line: str) -> list[RenderableType]:
        line = line.strip()
        if not line or line.startswith("#"):
            return []
        cmd, _, rest = line.partition(" ")
        cmd = cmd.lower()
        if cmd in ("raw", "call"):
            return getattr(self, "_" + cmd)(rest.strip())
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise CommandError(f"cannot split the arguments: {exc}") from None
        fn = getattr(self, "_" + cmd, None) if cmd in COMMANDS else None
        if fn is None:
            raise CommandError(f"unknown command {cmd!r} (type help)")
        try:
            return fn(words)
        except RpcError as exc:
            text = f"error {exc.code} {exc.message}" + (f": {json.dumps(exc.data, ensure_ascii=False)}" if exc.data is not None else "")
            raise CommandFailed([Text(text, style="red")]) from None

    # -- commands --------------------------------------------------------------------------------

    def _help(self, words: list[str]) -> list[RenderableType]:
        return [Text(HELP)]

    def _quit(self, words: list[str]) -> list[RenderableType]:
        raise Quit()

    _exit = _quit

    def _ping(self, words: list[str]) -> list[RenderableType]:
        return [Text(str(self.client.call("system.ping")))]

    def _create(self, words: list[str]) -> list[RenderableType]:
        positional, pairs, options = split_args(words)
        if len(positional) != 1:
            raise CommandError("usage: create TYPE [key=value ...] [--priority=N] [--parent=ID] [--max-attempts=N]")
        params: dict[str, Any] = {"type": positional[0]}
        if pairs:
            params["details"] = {k: parse_value(v) for k, v in pairs.items()}
        for key, value in options.items():
            name = _CREATE_ALIASES.get(key, key)
            params[name] = self.resolve(value) if name == "parentId" else parse_value(value)
        task = self.client.call("tasks.create", params)
        return [Text.assemble("created ", (task["id"], "bold"), f" {task['type']} ", status_text(task["status"]))]

    def _list(self, words: list[str]) -> list[RenderableType]:
        positional, pairs, options = split_args(words)
        params: dict[str, Any] = {}
        if positional:
            params["status"] = [p.upper() for p in positional]
        for key, value in {**pairs, **options}.items():
            if key == "type":
                params["type"] = value.split(",")
            elif key in ("parent", "parentId"):
                params["parentId"] = self.resolve(value)
            elif key == "limit":
                params["limit"] = _number(key, value, int)
            else:
                params[key] = parse_value(value)
        result = self.client.call("tasks.list", params)
        tasks = result.get("tasks", [])
        footer = f"{len(tasks)} task(s)" + (" (more: nextCursor set)" if result.get("nextCursor") else "")
        return [task_table(tasks, title=None), Text(footer)]

    def _one(self, method: str, words: list[str]) -> list[RenderableType]:
        if len(words) != 1:
            raise CommandError(f"usage: {method.split('.')[-1]} ID")
        task = self.client.call(method, {"id": self.resolve(words[0])})
        if isinstance(task, dict) and "status" in task:
            return [Text.assemble((task["id"], "bold"), f" {task.get('type')} ", status_text(task["status"]))]
        return [JSON.from_data(task)]

    def _get(self, words: list[str]) -> list[RenderableType]:
        if len(words) != 1:
            raise CommandError("usage: get ID")
        return [JSON.from_data(self.client.call("tasks.get", {"id": self.resolve(words[0])}))]

    def _cancel(self, words: list[str]) -> list[RenderableType]:
        return self._one("tasks.cancel", words)

    def _retry(self, words: list[str]) -> list[RenderableType]:
        return self._one("tasks.retry", words)

    def _pause(self, words: list[str]) -> list[RenderableType]:
        return self._one("tasks.pause", words)

    def _resume(self, words: list[str]) -> list[RenderableType]:
        return self._one("tasks.resume", words)

    def _delete(self, words: list[str]) -> list[RenderableType]:
        return self._one("tasks.delete", words)

    def _tree(self, words: list[str]) -> list[RenderableType]:
        if len(words) != 1:
            raise CommandError("usage: tree ID")
        result = self.client.call("tasks.tree", {"id": self.resolve(words[0])})
        return [render_tree(result)]

    def _wait(self, words: list[str]) -> list[RenderableType]:
        positional, _, options = split_args(words)
        if not positional:
            raise CommandError("usage: wait ID [STATUS ...] [--timeout=S]")
        task_id = self.resolve(positional[0])
        want = [s.upper() for s in positional[1:]] or ["COMPLETED", "FAILED", "CANCELLED"]
        timeout = _number("timeout", options["timeout"], float) if "timeout" in options else 30.0
        board = self.client.board
        if board.get(task_id) is None:
            self.client.call("tasks.get", {"id": task_id})

        def reached() -> bool:
            return any(s in this_run(board.status_history.get(task_id, [])) for s in want)

        ok = board.wait_for(lambda: reached() or not self.client.alive, timeout) and reached()
        if not ok and not self.client.alive:  # no point in waiting out the timeout
            raise SidecarGone(f"the sidecar exited (code {self.client.exit_code}) during wait\n{self.client.stderr_text()}")
        task = board.get(task_id) or {}
        if not ok:
            return [Text(f"{task_id} still {task.get('status')} after {timeout:g} s", style="red")]
        return [Text.assemble((task_id, "bold"), " ", status_text(str(task.get("status"))))]

    def _stats(self, words: list[str]) -> list[RenderableType]:
        stats = self.client.call("tasks.stats")
        table = Table(title=f"{stats.get('total', 0)} task(s)", title_justify="left")
        statuses = sorted({s for counts in stats.get("byType", {}).values() for s in counts} | set(stats.get("byStatus", {})))
        table.add_column("type")
        for s in statuses:
            table.add_column(s, justify="right")
        for type_, counts in sorted(stats.get("byType", {}).items()):
            table.add_row(type_, *[str(counts.get(s, 0)) for s in statuses])
        table.add_row("all", *[str(stats.get("byStatus", {}).get(s, 0)) for s in statuses], style="bold")
        return [table]

    def _info(self, words: list[str]) -> list[RenderableType]:
        info = self.load_info()
        table = Table(title=f"sidecar {info.get('version')} protocol {info.get('protocolVersion')} pid {info.get('pid')}\ndb {info.get('dbPath')}", title_justify="left")
        for col in ("type", "concurrency", "maxAttempts", "timeoutS", "details"):
            table.add_column(col)
        for h in info.get("handlers", []):
            schema = h.get("detailsSchema") or {}
            props = ", ".join((schema.get("properties") or {}).keys()) if isinstance(schema, dict) else ""
            table.add_row(str(h.get("type")), str(h.get("concurrency")), str(h.get("maxAttempts")), str(h.get("timeoutS")), props)
        return [table]

    def _call(self, rest: str) -> list[RenderableType]:
        method, _, params_text = rest.partition(" ")
        if not method:
            raise CommandError("usage: call METHOD [{json params}]")
        params = None
        if params_text.strip():
            try:
                params = json.loads(params_text)
            except json.JSONDecodeError as exc:
                raise CommandError(f"params are not JSON: {exc}") from None
        response = self.client.request(method, params)
        if isinstance(response, dict) and "error" in response:
            raise CommandFailed(self._show_response(response))
        return self._show_response(response)

    def _raw(self, rest: str) -> list[RenderableType]:
        if not rest:
            raise CommandError("usage: raw {json}")
        try:
            msg = json.loads(rest)
        except json.JSONDecodeError:
            msg = None
        if isinstance(msg, dict) and "method" in msg and "jsonrpc" not in msg:
            msg = {"jsonrpc": "2.0", **msg}
        if isinstance(msg, dict) and "method" in msg and "id" not in msg:
            msg["id"] = f"raw-{id(msg)}"
        if isinstance(msg, dict):
            rest = json.dumps(msg, ensure_ascii=False)
        # An error answer is shown like any other and does not fail the command: raw is the way to
        # send malformed or refused input on purpose.
        response = self.client.send_raw(rest, timeout=10)
        if response is None:
            return [Text("(no response)")]
        return self._show_response(response)

    def _show_response(self, response: Any) -> list[RenderableType]:
        return [JSON.from_data(response)]


def render_tree(result: Any) -> RenderableType:
    """A rich Tree from a tasks.tree result: nested ``children`` lists, or a flat list with parentIds."""
    root_task = result.get("task", result) if isinstance(result, dict) else result

    def label(t: dict[str, Any]) -> Text:
        counts = t.get("childCounts") or t.get("counts")
        extra = f"  {json.dumps(counts)}" if counts else ""
        return Text.assemble((str(t.get("id", "?"))[:8], "bold"), f" {t.get('type')} ", status_text(str(t.get("status"))), f" {t.get('progress', 0):.0f}%{extra}")

    if not isinstance(root_task, dict):
        return JSON.from_data(result)
    tree = Tree(label(root_task))

    def add(node: Tree, t: dict[str, Any]) -> None:
        for child in t.get("children") or []:
            if isinstance(child, dict):
                add(node.add(label(child)), child)

    add(tree, root_task)
    if isinstance(result, dict) and isinstance(result.get("tasks"), list):  # flat form
        by_parent: dict[Any, list[dict[str, Any]]] = {}
        for t in result["tasks"]:
            by_parent.setdefault(t.get("parentId"), []).append(t)

        def add_flat(node: Tree, parent_id: Any) -> None:
            for t in by_parent.get(parent_id, []):
                add_flat(node.add(label(t)), t.get("id"))

        add_flat(tree, root_task.get("id"))
    return tree
