"""``process.run``: run an allow-listed external program, parse its progress, kill its whole tree.

A program is named by the app at start-up (``--allow-program yt-dlp=/usr/bin/yt-dlp``); a renderer
can only pick such a NAME and its arguments, never a path or a shell string. Note that an allowed
program runs with whatever arguments the task gives it, so allow only programs you are prepared to
expose that way.

Apps can call :func:`run_program` from their own handlers (see ``docs/examples/playlistify_handlers.py``).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.handlers import program_ledger
from sidecar.handlers.context import TaskContext, TaskError
from sidecar.handlers.formatting import clock, human_bytes
from sidecar.handlers.registry import AppOptions, DetailsError, handler

log = logging.getLogger(__name__)

KILL_GRACE_S = 3.0  # SIGTERM, then SIGKILL after this long (the engine's own grace is 5 s)
TAIL_LINES = 20  # lines of stderr kept for the error (and of stdout for the result)
MAX_LINE = 64 * 1024  # a longer run without a newline is cut into lines of this size
ERROR_TAIL = 8  # stderr lines put into the error text

# Variables that make a program (or the interpreter of a script) load other code; a task cannot
# set them. BASH_FUNC_: bash imports exported functions from the environment, so one could replace
# a command a wrapper script runs.
DENIED_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "PERL5", "BASH_FUNC_", "RUBY", "LUA_INIT", "NODE_", "JAVA_",
                       "_JAVA_", "JDK_JAVA_", "OPENSSL_", "GCONV_", "GIT_")
DENIED_ENV = {"PATH", "PATHEXT", "COMSPEC", "BASH_ENV", "ENV", "PERLLIB", "SHELLOPTS", "BASHOPTS", "IFS",
              "CDPATH", "GLOBIGNORE", "PS4", "PROMPT_COMMAND", "TCLLIBPATH", "CLASSPATH", "HOSTALIASES",
              "LOCPATH", "NLSPATH"}

DETAILS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["program"],
    "properties": {
        "program": {"type": "string", "minLength": 1, "maxLength": 200},
        "args": {"type": "array", "maxItems": 4096, "items": {"type": "string", "maxLength": 32768}},
        "cwd": {"type": "string", "minLength": 1, "maxLength": 4096},
        "env": {"type": "object", "maxProperties": 256, "additionalProperties": {"type": "string", "maxLength": 32768}},
        "parser": {
            "oneOf": [
                {"enum": ["none", "yt-dlp", "ffmpeg"]},
                {
                    "type": "object",
                    "required": ["regex"],
                    "properties": {"regex": {"type": "string", "minLength": 1, "maxLength": 2000}},
                    "additionalProperties": False,
                },
            ]
        },
        "durationS": {"type": "number", "exclusiveMinimum": 0},
        "timeoutS": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
}

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@dataclass(frozen=True)
class Progress:
    """One parsed line: a percent (None: unchanged) and/or a message."""

    percent: float | None
    message: str | None = None


class Parser(Protocol):
    def feed(self, line: str, stream: str) -> Progress | None: ...


# ------------------------------------------------------------------ yt-dlp

_YTDLP = re.compile(r"^\[download\]\s+(?P<percent>\d+(?:\.\d+)?)%(?P<rest>.*)$")
_YTDLP_TEMPLATE = re.compile(
    r"^\[progress\]\s+(?P<done>\d+)/(?P<total>\d+(?:\.\d+)?|NA|None)"
    r"(?:\s+(?P<speed>\d+(?:\.\d+)?|NA|None))?(?:\s+(?P<eta>\d+|NA|None))?\s*$"
)
_YTDLP_TEMPLATE_PERCENT = re.compile(r"^\[progress\]\s+(?P<percent>\d+(?:\.\d+)?)%(?P<rest>.*)$")
_YTDLP_STEPS = re.compile(r"^\[(?P<step>Merger|ExtractAudio|VideoConvertor|VideoRemuxer|FixupM3u8|Metadata)\]\s*(?P<rest>.*)$")
_YTDLP_DEST = re.compile(r"^\[download\] Destination: (?P<path>.+)$")

# For ``--progress-template``, print this (``download:`` prefix included) and parse it with "yt-dlp":
YTDLP_PROGRESS_TEMPLATE = (
    "download:[progress] %(progress.downloaded_bytes)s/"
    "%(progress.total_bytes,progress.total_bytes_estimate)s %(progress.speed)s %(progress.eta)s"
)


def parse_ytdlp_line(line: str) -> Progress | None:
    """A yt-dlp output line (``--newline``, or the ``[progress]`` template above) → Progress."""
    line = ANSI.sub("", line).strip()
    m = _YTDLP.match(line)
    if m:
        rest = " ".join(m["rest"].split())
        return Progress(float(m["percent"]), f"{m['percent']}%{' ' + rest if rest else ''}")
    m = _YTDLP_TEMPLATE.match(line)
    if m:
        done = int(m["done"])
        total = float(m["total"]) if m["total"] not in ("NA", "None") else None
        speed = float(m["speed"]) if m["speed"] and m["speed"] not in ("NA", "None") else None
        eta = int(m["eta"]) if m["eta"] and m["eta"] not in ("NA", "None") else None
        text = human_bytes(done) + (f" of {human_bytes(total)}" if total else "")
        if speed:
            text += f" · {human_bytes(speed)}/s"
        if eta is not None:
            text += f" · ETA {clock(eta)}"
        return Progress(min(100.0, done * 100.0 / total) if total else None, text)
    m = _YTDLP_TEMPLATE_PERCENT.match(line)
    if m:
        rest = " ".join(m["rest"].split())
        return Progress(float(m["percent"]), f"{m['percent']}%{' ' + rest if rest else ''}")
    m = _YTDLP_DEST.match(line)
    if m:
        return Progress(None, f"downloading {os.path.basename(m['path'])}")
    m = _YTDLP_STEPS.match(line)
    if m:
        return Progress(None, f"{m['step']}: {m['rest']}"[:200])
    return None


class YtDlpParser:
    def feed(self, line: str, stream: str) -> Progress | None:
        return parse_ytdlp_line(line)


# ------------------------------------------------------------------ ffmpeg

_DURATION = re.compile(r"^\s*Duration:\s*(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)")


def parse_ffmpeg_duration(line: str) -> float | None:
    """``  Duration: 00:01:23.45, start: …`` (ffmpeg's stderr banner) → 83.45 seconds."""
    m = _DURATION.match(line)
    if not m:
        return None
    return int(m["h"]) * 3600 + int(m["m"]) * 60 + float(m["s"])


class FfmpegParser:
    """``-progress pipe:1`` blocks (``key=value`` lines ending with ``progress=continue|end``).

    The percent needs the input's duration: ``durationS`` from the task, else the first
    ``Duration:`` line ffmpeg prints on stderr. Without either, only the time is reported.
    """

    def __init__(self, duration_s: float | None = None) -> None:
        self.duration_s = duration_s
        self.out_time_s: float | None = None
        self.speed: str | None = None

    def feed(self, line: str, stream: str) -> Progress | None:
        line = line.strip()
        if self.duration_s is None:
            duration = parse_ffmpeg_duration(line)
            if duration:
                self.duration_s = duration
                return None
        key, sep, value = line.partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key in ("out_time_us", "out_time_ms"):  # both are microseconds (out_time_ms is misnamed)
            if value.lstrip("-").isdigit():
                self.out_time_s = max(0, int(value)) / 1e6
        elif key == "speed":
            self.speed = value if value not in ("N/A", "") else None
        elif key == "progress":
            return self._report(end=value == "end")
        return None

    def _report(self, *, end: bool) -> Progress:
        parts = []
        if self.out_time_s is not None:
            parts.append(clock(self.out_time_s) + (f" of {clock(self.duration_s)}" if self.duration_s else ""))
        if self.speed:
            parts.append(self.speed)
        message = " · ".join(parts) or None
        if end:
            return Progress(100.0, message or "done")
        if self.duration_s and self.out_time_s is not None:
            return Progress(min(99.9, self.out_time_s * 100.0 / self.duration_s), message)
        return Progress(None, message)


# ------------------------------------------------------------------ generic regex


REGEX_TIMEOUT_S = 0.05  # per output line; a task's own pattern must not hold the sidecar up


def compile_regex(pattern: str) -> Any:
    """Named groups: ``percent``, or ``done`` and ``total``; optional ``message``.

    The pattern comes from the renderer (``tasks.create`` details) and runs in the sidecar's own
    process. CPython's ``re`` holds the GIL for a whole match with no time limit, so a pattern that
    backtracks catastrophically froze every thread. The ``regex`` package (same syntax) matches
    with a timeout and lets other threads run meanwhile. Imported here: only such tasks need it.
    """
    import regex

    compiled = regex.compile(pattern)
    groups = set(compiled.groupindex)
    if "percent" not in groups and not {"done", "total"} <= groups:
        raise ValueError("needs a named group (?P<percent>…), or (?P<done>…) and (?P<total>…)")
    return compiled


class RegexParser:
    def __init__(self, pattern: str) -> None:
        self.regex: Any = compile_regex(pattern)

    def feed(self, line: str, stream: str) -> Progress | None:
        if self.regex is None:
            return None
        try:
            m = self.regex.search(ANSI.sub("", line)[:4096], timeout=REGEX_TIMEOUT_S, concurrent=True)
        except TimeoutError:
            # One slow line means the pattern backtracks: stop parsing this run's output with it.
            log.warning("parser.regex took over %gs on one line; progress parsing is off for this run",
                        REGEX_TIMEOUT_S)
            self.regex = None
            return None
        if not m:
            return None
        groups = m.groupdict()
        try:
            if groups.get("percent") is not None:
                percent = float(groups["percent"])
            else:
                percent = float(groups["done"]) * 100.0 / float(groups["total"])
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        message = groups.get("message") or line.strip()[:200]
        return Progress(min(100.0, max(0.0, percent)), message)


class NoParser:
    def feed(self, line: str, stream: str) -> Progress | None:
        return None


def make_parser(spec: Any, program: str, duration_s: float | None = None) -> Parser:
    """``"yt-dlp"``, ``"ffmpeg"``, ``"none"``, ``{"regex": …}``, or None: by the program's name."""
    if spec is None:
        spec = {"yt-dlp": "yt-dlp", "youtube-dl": "yt-dlp", "ffmpeg": "ffmpeg"}.get(program.lower(), "none")
    if isinstance(spec, dict):
        return RegexParser(spec["regex"])
    if spec == "yt-dlp":
        return YtDlpParser()
    if spec == "ffmpeg":
        return FfmpegParser(duration_s)
    return NoParser()


# ------------------------------------------------------------------ policy


def _inside(path: str, allow_dirs: list[str]) -> bool:
    real = os.path.realpath(path)
    for allowed in allow_dirs:
        root = os.path.realpath(allowed)
        try:
            if os.path.commonpath([root, real]) == root:
                return True
        except ValueError:
            continue
    return False


def check_env(env: dict[str, str]) -> None:
    for name in env:
        upper = name.upper()
        if not name or "=" in name or "\x00" in name + env[name]:
            raise DetailsError(f"env.{name}", "is not a valid variable")
        if upper in DENIED_ENV or upper.startswith(DENIED_ENV_PREFIXES) or "%" in name or "(" in name:
            raise DetailsError(f"env.{name}", "cannot be set by a task")
        if env[name].lstrip().startswith("() {"):  # an exported bash function, under any name
            raise DetailsError(f"env.{name}", "cannot be set by a task: a shell function definition")


def check_details(details: dict[str, Any], options: AppOptions) -> None:
    """At ``tasks.create``: only allow-listed programs; cwd inside an allowed directory."""
    program = details.get("program", "")
    if program not in options.allow_programs:
        allowed = ", ".join(sorted(options.allow_programs)) or "none (start the sidecar with --allow-program NAME=PATH)"
        raise DetailsError("program", f"is not an allowed program (allowed: {allowed})")
    if any("\x00" in a for a in details.get("args", [])):
        raise DetailsError("args", "must not contain NUL")
    cwd = details.get("cwd")
    if cwd is not None:
        if not os.path.isabs(cwd) or ".." in cwd.replace("\\", "/").split("/"):
            raise DetailsError("cwd", "must be an absolute path without '..'")
        if not _inside(cwd, options.allow_dirs):
            raise DetailsError("cwd", "is outside the allowed directories (--allow-dir)")
    check_env(details.get("env") or {})
    parser = details.get("parser")
    if isinstance(parser, dict):
        import regex

        try:
            compile_regex(parser["regex"])
        except (regex.error, ValueError) as exc:
            raise DetailsError("parser.regex", str(exc)) from None


# ------------------------------------------------------------------ process tree


_REAL_POPEN = subprocess.Popen  # captured at import: test fakes replace subprocess.Popen later


def own_group(proc: Any) -> int | None:
    """The process group this module created for ``proc`` (``start_new_session``), or None.

    Checked right after the spawn, and strictly: ``os.killpg(1, sig)`` is ``kill(-1, sig)``, which
    signals every process the caller may signal, so a group id is only used when it is a real child's
    own new group (never 0 or 1, never ours). A fake process (pytest-subprocess numbers them 1, 2, …)
    gets None and is stopped through its own ``terminate``/``kill``.
    """
    if os.name != "posix" or not isinstance(proc, _REAL_POPEN):
        return None
    pid = proc.pid
    if not isinstance(pid, int) or pid <= 1:
        return None
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return None
    if pgid != pid or pgid <= 1 or pgid == os.getpgrp():
        return None
    return pgid


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_tree(proc: Any, pgid: int | None, grace_s: float | None = None) -> None:
    """Terminate ``proc`` and everything it started: politely, then by force after ``grace_s``.

    POSIX: the program leads its own session (``start_new_session``), so its process group ``pgid``
    (from :func:`own_group`) is the tree; SIGTERM to the group, wait until the group is empty or the
    grace is over, SIGKILL it. Windows: CTRL_BREAK to its process group, then ``taskkill /T /F``
    (kills descendants still linked to a living parent). Without a group: the process alone.
    """
    grace_s = KILL_GRACE_S if grace_s is None else grace_s
    if os.name == "nt" and isinstance(proc, _REAL_POPEN):  # pragma: no cover - exercised on Windows only
        if proc.poll() is None:
            try:
                proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            except OSError:
                pass
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
            subprocess.run(["taskkill", "/PID", str(proc.pid), "/T", "/F"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        return
    if pgid is None or pgid <= 1:  # no group of our own: the process alone
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        proc.poll()
        return  # nothing left in the group
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so a zombie does not count as alive
        if proc.returncode is not None and not _group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
        pass


# The program trees handlers are running. kill_tree's SIGKILL comes from the handler's thread
# KILL_GRACE_S after the SIGTERM; a sidecar stopping with a shorter --grace-seconds exits first and
# takes that thread with it, which would leave a program that ignores SIGTERM running on, an orphan
# beside the copy the next launch starts. What is still here when the interpreter exits is killed.
_live: dict[int, tuple[Any, int | None]] = {}
_live_lock = threading.Lock()


def kill_leftover_programs() -> int:
    """SIGKILL every program tree still running (at exit); returns how many there were."""
    with _live_lock:
        left = list(_live.values())
        _live.clear()
    for proc, pgid in left:
        try:
            if os.name == "nt":  # pragma: no cover - exercised on Windows only
                subprocess.run(["taskkill", "/PID", str(proc.pid), "/T", "/F"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            elif pgid is not None and pgid > 1:
                os.killpg(pgid, signal.SIGKILL)
            elif proc.poll() is None:
                proc.kill()
        except OSError:
            pass
        program_ledger.forget(proc.pid)  # killed: nothing for the next start to look for
    return len(left)


atexit.register(kill_leftover_programs)


def _pump(stream: Any, which: str, on_line: Any) -> None:
    pending = b""
    read = getattr(stream, "read1", stream.read)
    try:
        while True:
            chunk = read(65536)
            if not chunk:
                break
            pending += chunk
            pieces = re.split(rb"\r\n|\r|\n", pending)
            pending = pieces.pop()
            if len(pending) > MAX_LINE:
                pieces.append(pending)
                pending = b""
            for piece in pieces:
                if piece:
                    on_line(piece.decode("utf-8", "replace"), which)
        if pending:
            on_line(pending.decode("utf-8", "replace"), which)
    except (OSError, ValueError):
        pass  # the pipe was closed under us
    finally:
        try:
            stream.close()  # closed here when run_program left it to this thread
        except (OSError, ValueError):
            pass


# ------------------------------------------------------------------ running


def run_program(
    ctx: TaskContext,
    program: str,
    args: list[str] | None = None,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    parser: Any = None,
    duration_s: float | None = None,
    timeout_s: float | None = None,
    options: AppOptions | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Run the allow-listed ``program`` (a NAME) with ``args``; returns ``{exitCode, stdoutTail}``.

    Non-zero exit: TaskError (retryable; the task's ``maxAttempts`` decides whether it is tried
    again) with the last lines of stderr. A stop (cancel, pause, shutdown, engine timeout) or
    ``timeout_s`` kills the whole process tree first.
    """
    options = options or ctx.options or AppOptions()
    path = options.allow_programs.get(program)
    if path is None:
        raise TaskError(f"program {program!r} is not allowed (--allow-program {program}=PATH)", retryable=False)
    chosen = make_parser(parser, program, duration_s)
    stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    stdout_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lock = threading.Lock()
    last_percent = [0.0]

    def on_line(line: str, which: str) -> None:
        clean = ANSI.sub("", line).rstrip()
        with lock:
            (stderr_tail if which == "stderr" else stdout_tail).append(clean[:2000])
            try:
                parsed = chosen.feed(clean, which)
            except Exception:  # a parser must never take the task down
                parsed = None
            if parsed is not None and report:
                if parsed.percent is not None:
                    last_percent[0] = parsed.percent
                if parsed.percent is not None or parsed.message:
                    ctx.progress(last_percent[0], parsed.message)

    kwargs: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "cwd": cwd,
        "env": {**os.environ, **env} if env else None,
        "close_fds": True,
    }
    if os.name == "nt":  # pragma: no cover
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True
    ctx.raise_if_cancelled()
    try:
        proc = subprocess.Popen([path, *(args or [])], **kwargs)
    except OSError as exc:
        raise TaskError(f"cannot start {program} ({path}): {exc}", retryable=False) from None
    pgid = own_group(proc)
    recorded = pgid is not None or (os.name == "nt" and isinstance(proc, _REAL_POPEN))  # never a fake's pid
    if recorded:
        program_ledger.record(proc.pid)
    with _live_lock:
        _live[id(proc)] = (proc, pgid)

    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", on_line), daemon=True, name=f"{program}-stdout"),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", on_line), daemon=True, name=f"{program}-stderr"),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    timed_out = False
    try:
        while True:
            try:
                proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if ctx.cancelled:
                break
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
    finally:
        kill_tree(proc, pgid)  # stopped: the whole tree; exited: whatever it left behind in its group
        with _live_lock:
            _live.pop(id(proc), None)
        if recorded:
            program_ledger.forget(proc.pid)
        drained = time.monotonic() + 2.0  # the output still in the pipes, both readers together
        for reader in readers:
            reader.join(max(0.0, drained - time.monotonic()))
        for reader, stream in zip(readers, (proc.stdout, proc.stderr)):
            # A reader still blocked after the program ended: something the program detached into
            # a session of its own (setsid) holds the pipe. Closing the stream would wait for that
            # read (a buffered reader's lock), so the task would last as long as the daemon: the
            # stream is left to its reader, which closes it at the daemon's EOF.
            if stream is None or reader.is_alive():
                continue
            try:
                stream.close()
            except OSError:
                pass
    ctx.raise_if_cancelled()
    if timed_out:
        raise TaskError(f"{program} timed out after {timeout_s:g}s" + _tail(stderr_tail), retryable=True)
    code = proc.returncode
    if code != 0:
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        raise TaskError(f"{program} {how}" + _tail(stderr_tail), retryable=True)
    return {"exitCode": 0, "stdoutTail": list(stdout_tail)[-ERROR_TAIL:]}


def _tail(lines: collections.deque[str]) -> str:
    kept = [line for line in lines if line.strip()][-ERROR_TAIL:]
    return (":\n" + "\n".join(kept)) if kept else ""


@handler(
    "process.run",
    max_attempts=1,
    details_schema=DETAILS_SCHEMA,
    check_details=check_details,
    trusted=True,
)
def process_run(ctx: TaskContext) -> dict[str, Any]:
    """``{program, args?, cwd?, env?, parser?, durationS?, timeoutS?}`` → ``{exitCode, stdoutTail}``."""
    d = ctx.details
    cwd = d.get("cwd")
    options = ctx.options or AppOptions()
    if cwd is not None and not _inside(cwd, options.allow_dirs):  # again, now that it is used
        raise TaskError(f"cwd {cwd} is outside the allowed directories", retryable=False)
    if cwd is not None and not os.path.isdir(cwd):
        raise TaskError(f"cwd {cwd} is not a directory", retryable=False)
    try:
        check_env(d.get("env") or {})
    except DetailsError as exc:
        raise TaskError(f"env: {exc}", retryable=False) from None
    return run_program(
        ctx,
        d["program"],
        list(d.get("args", [])),
        cwd=cwd,
        env=d.get("env"),
        parser=d.get("parser"),
        duration_s=d.get("durationS"),
        timeout_s=d.get("timeoutS"),
    )
