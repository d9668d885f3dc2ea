"""Freeze the sidecar with PyInstaller for the current platform.

    .venv/bin/python build/freeze.py [--handlers MODULE ...] [--path DIR ...] [--onefile]

Builds build/dist/task-sidecar/task-sidecar[.exe] (one-folder bundle, the default: fast start) or,
with --onefile, build/dist/onefile/task-sidecar[.exe] (one self-extracting file). App handler
modules named with --handlers are frozen in (hidden imports; a package brings its submodules) and
are loaded at run time exactly as in source mode: `task-sidecar --db PATH --handlers MODULE`.
Then prints the output path, its size and the median time from spawn to `sidecar.ready`.
Needs the build extra: `.venv/bin/pip install -e ".[build]"`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import measure  # noqa: E402  (build/measure.py)

EXE_SUFFIX = ".exe" if sys.platform == "win32" else ""
NAME = "task-sidecar"


def output_path(onefile: bool, distpath: Path) -> Path:
    if onefile:
        return distpath / "onefile" / f"{NAME}{EXE_SUFFIX}"
    return distpath / NAME / f"{NAME}{EXE_SUFFIX}"


def size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def missing_modules(names: list[str], paths: list[str]) -> list[str]:
    """Handler modules that cannot be found: PyInstaller would only warn, and the binary would fail at start."""
    import importlib.util

    sys.path[:0] = paths
    try:
        missing = []
        for name in names:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(name)
        return missing
    finally:
        del sys.path[: len(paths)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--handlers", action="extend", nargs="+", default=[], metavar="MODULE",
                   help="app handler module(s) to freeze in (repeatable)")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="directory to find the handler modules in while building (default: the current one)")
    p.add_argument("--onefile", action="store_true", help="one self-extracting file instead of a folder")
    p.add_argument("--exclude", action="append", default=[], metavar="MODULE",
                   help="exclude one more module from the bundle")
    p.add_argument("--keep", action="append", default=[], metavar="MODULE",
                   help="keep a module the spec excludes by default (e.g. multiprocessing for a handler that uses it)")
    p.add_argument("--no-excludes", action="store_true", help="drop the spec's default exclusions (only to measure what they save)")
    p.add_argument("--noarchive", action="store_true",
                   help="loose .pyc files instead of the compressed module archive: faster start, bigger bundle")
    p.add_argument("--distpath", type=Path, default=HERE / "dist", help="output root (default build/dist)")
    p.add_argument("--workpath", type=Path, default=HERE / "work", help="scratch (default build/work)")
    p.add_argument("--clean", action="store_true", help="drop PyInstaller's caches first")
    p.add_argument("--runs", type=int, default=5, help="start-ups to time after the build (0: don't)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    args = p.parse_args(argv)

    try:
        import PyInstaller.__main__
    except ImportError:
        p.exit(2, 'PyInstaller is missing: .venv/bin/pip install -e ".[build]"\n')

    paths = [str(Path(d).resolve()) for d in (args.path or [os.getcwd()])]
    missing = missing_modules(args.handlers, paths)
    if missing:
        p.exit(2, f"handler module(s) not found: {', '.join(missing)} (searched {', '.join(paths)} and "
                  f"the installed packages; give the folder with --path)\n")
    spec_args: list[str] = []
    for module in args.handlers:
        spec_args += ["--handlers", module]
    for d in paths:
        spec_args += ["--path", d]
    for module in args.exclude:
        spec_args += ["--exclude", module]
    for module in args.keep:
        spec_args += ["--keep", module]
    if args.onefile:
        spec_args.append("--onefile")
    if args.no_excludes:
        spec_args.append("--no-excludes")
    if args.noarchive:
        spec_args.append("--noarchive")

    kind = "onefile" if args.onefile else "onedir"
    distpath = args.distpath.resolve()
    workpath = args.workpath.resolve() / kind
    target = output_path(args.onefile, distpath)
    bundle = target if args.onefile else target.parent
    pyi_args = [
        str(HERE / "task-sidecar.spec"),
        "--noconfirm",
        "--log-level", "WARN",
        "--distpath", str(distpath / "onefile") if args.onefile else str(distpath),
        "--workpath", str(workpath),
        *(["--clean"] if args.clean else []),
        "--", *spec_args,
    ]
    print(f"freezing ({kind}, handlers: {', '.join(args.handlers) or 'built-in only'}) ...", file=sys.stderr)
    started = time.perf_counter()
    PyInstaller.__main__.run(pyi_args)
    build_s = time.perf_counter() - started
    if not target.exists():
        print(f"build finished but {target} is missing", file=sys.stderr)
        return 1

    result: dict = {
        "kind": kind,
        "path": str(target),
        "bundle": str(bundle),
        "size_mb": round(size_bytes(bundle) / 1e6, 1),
        "build_s": round(build_s, 1),
        "handlers": args.handlers,
    }
    if args.runs > 0:
        result["startup"] = measure.measure([str(target)], runs=args.runs)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"output: {target}")
        print(f"size:   {result['size_mb']} MB ({kind}: {bundle}), built in {result['build_s']} s")
        if "startup" in result:
            print(f"start:  {measure.describe(result['startup'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
