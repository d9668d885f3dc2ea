"""``task-sidecar`` / ``python -m sidecar``: command-line options."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sidecar import __version__

DEFAULT_DB_ENV = "TASK_SIDECAR_DB"


def default_db_path() -> str:
    from platformdirs import user_data_dir

    return os.path.join(user_data_dir("task-sidecar", appauthor=False), "tasks.db")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


MAX_CONCURRENCY = 256  # queue.setConcurrency's bound too: each slot is a handler thread


def concurrency_limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CONCURRENCY}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="task-sidecar",
        description="Persistent background-task service: JSON-RPC 2.0 over stdio, one message per line.",
    )
    p.add_argument("--db", default=os.environ.get(DEFAULT_DB_ENV),
                   help=f"SQLite database file (env {DEFAULT_DB_ENV}; default: the user data directory)")
    p.add_argument("--handlers", action="append", default=[], metavar="MODULE|FILE.py",
                   help="load a module by name, or a .py file by path, to register task handlers "
                        "(repeatable; exit 5 if one cannot be loaded)")
    p.add_argument("--concurrency", type=concurrency_limit, default=4,
                   help=f"global limit of running tasks (1-{MAX_CONCURRENCY})")
    p.add_argument("--durability", choices=("normal", "full"), default="normal",
                   help="SQLite synchronous mode: normal (WAL, fast) or full (fsync every commit)")
    p.add_argument("--max-message-bytes", type=positive_int, default=8 * 1024 * 1024,
                   help="longest accepted request line")
    p.add_argument("--grace-seconds", type=float, default=5.0,
                   help="how long a cancelled or stopping handler may take before it is abandoned")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a directory handlers may write into (repeatable; none: file outputs are refused)")
    p.add_argument("--allow-program", action="append", default=[], metavar="NAME=PATH",
                   help="an external program handlers may run, by name (repeatable)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="restrict downloads to these hosts (repeatable; none: any http(s) host)")
    p.add_argument("--max-db-pages", type=positive_int, default=None, metavar="N",
                   help="cap the database at N pages (4 KiB each); writes past it fail with -32006")
    p.add_argument("--move-aside-corrupt-db", action="store_true",
                   help="if the database cannot be opened, rename it to DB.corrupt-<time> and start empty "
                        "(never done silently: without this flag the sidecar exits with code 4)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    p.add_argument("--version", action="version", version=f"task-sidecar {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from sidecar.memory import allocate_objects_with_malloc, collect_less_often

    allocate_objects_with_malloc()
    collect_less_often()
    from sidecar.server import Config, Sidecar

    programs: dict[str, str] = {}
    for entry in args.allow_program:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            parser().error(f"--allow-program expects NAME=PATH, got {entry!r}")
        programs[name] = path
    config = Config(
        db_path=args.db or default_db_path(),
        handler_modules=args.handlers,
        concurrency=args.concurrency,
        durability=args.durability,
        max_message_bytes=args.max_message_bytes,
        grace_s=args.grace_seconds,
        allow_dirs=args.allow_dir,
        allow_programs=programs,
        allow_hosts=args.allow_host,
        max_db_pages=args.max_db_pages,
        move_aside_corrupt=args.move_aside_corrupt_db,
    )
    return Sidecar(config).run()
