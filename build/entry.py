"""Entry point of the frozen sidecar: the same ``main`` as the ``task-sidecar`` console script."""

import sys

if __name__ == "__main__":
    if "multiprocessing" in sys.modules:
        # Only when a build kept multiprocessing (freeze.py --keep multiprocessing) for a handler that
        # uses it: PyInstaller's runtime hook imported it, and a worker it spawns re-runs this binary.
        sys.modules["multiprocessing"].freeze_support()

    from sidecar.cli import main

    raise SystemExit(main())
