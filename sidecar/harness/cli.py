"""``task-sidecar-harness`` / ``python -m sidecar.harness``: argument parsing and mode dispatch."""

from __future__ import annotations

import argparse
import sys

from sidecar.harness.client import RpcError, SidecarGone
from sidecar.harness.session import OptionError, SidecarOptions, open_sidecar
from sidecar.harness.transport import SpawnError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIDECAR = 0, 1, 2, 3


def _add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = p.add_argument_group("sidecar")
    g.add_argument("--cmd", default=d(None), help="command that starts the sidecar (default: this Python, -m sidecar, from the source tree); --db PATH is appended; a relative program path is relative to the current directory")
    g.add_argument("--db", default=d(None), help="database file (default: a fresh temporary one, deleted at exit)")
    g.add_argument("--sidecar-arg", dest="sidecar_args", action="append", default=d([]), metavar="ARG", help="extra argument for the sidecar (repeatable), e.g. --sidecar-arg=--concurrency=8")
    g.add_argument("--record", default=d(None), metavar="FILE", help="write every message, both directions, with timestamps, as JSON lines")
    g.add_argument("--stderr-log", default=d(None), metavar="FILE", help="append the sidecar's stderr to FILE")
    g.add_argument("--show-stderr", action="store_true", default=d(False), help="copy the sidecar's stderr to the harness's stderr")
    g.add_argument("--ready-timeout", type=float, default=d(30.0), metavar="S", help="seconds to wait for sidecar.ready (default 30)")
    g.add_argument("--plain", action="store_true", default=d(False), help="plain lines instead of the live view, even on a terminal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="task-sidecar-harness",
        description="Start a task-sidecar child and drive it: interactively (default on a terminal), "
        "a demo workload (--demo), a scenario file (run), or a recorded session (replay).",
    )
    parser.add_argument("--demo", action="store_true", help="run the playlist-import demo live, then print a summary")
    parser.add_argument("--history", default=None, metavar="FILE", help="interactive prompt history file")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run scenario files (YAML or JSON lines); non-zero exit on the first failure")
    run.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    run.add_argument("--keep-going", action="store_true", help="run every step even after a failure")
    _add_common(run, suppress=True)
    replay = sub.add_parser("replay", help="re-send the requests of a recording to a fresh sidecar and report differences")
    replay.add_argument("recording", metavar="FILE")
    replay.add_argument("--no-timing", action="store_true", help="send requests back to back instead of with the recorded delays")
    replay.add_argument("--settle", type=float, default=None, metavar="S", help="seconds to keep listening after the last request (default: as recorded, at most 30)")
    _add_common(replay, suppress=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = SidecarOptions(
        cmd=args.cmd,
        db=args.db,
        record=args.record,
        sidecar_args=args.sidecar_args,
        stderr_log=args.stderr_log,
        show_stderr=args.show_stderr,
        ready_timeout=args.ready_timeout,
    )
    try:
        if args.command == "run":
            from sidecar.harness.run_cmd import run_scenarios

            return run_scenarios(opts, args.scenarios, keep_going=args.keep_going)
        if args.command == "replay":
            from sidecar.harness.replay import replay

            return replay(opts, args.recording, timing=not args.no_timing, settle=args.settle)
        if args.demo:
            from sidecar.harness.demo import run_demo

            return run_demo(opts, live=not args.plain and sys.stdout.isatty())
        if sys.stdin.isatty() and sys.stdout.isatty() and not args.plain:
            from sidecar.harness.interactive import run_interactive

            return run_interactive(opts, history=args.history)
        from sidecar.harness.lines import run_lines

        return run_lines(opts, sys.stdin)
    except RpcError as exc:
        sys.stderr.write(f"task-sidecar-harness: unexpected error response from the sidecar: {exc}\n")
        return EXIT_FAILED
    except (SidecarGone, SpawnError) as exc:
        sys.stderr.write(f"task-sidecar-harness: {exc}\n")
        return EXIT_SIDECAR
    except OptionError as exc:
        sys.stderr.write(f"task-sidecar-harness: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
