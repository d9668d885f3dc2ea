"""Session recorder: every message in both directions, one JSON object per line.

Line shape: ``{"t": <epoch seconds>, "dir": "send"|"recv"|"meta", "msg": <message>}``; a received
line that is not JSON is kept as ``{"t", "dir": "recv", "raw": "<text>"}``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, TextIO


class Recorder:
    def __init__(self, path: str):
        self._file: TextIO = open(path, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def _write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line + "\n")
            self._file.flush()

    def meta(self, **fields: Any) -> None:
        self._write({"t": time.time(), "dir": "meta", "msg": fields})

    def sent(self, msg: Any) -> None:
        self._write({"t": time.time(), "dir": "send", "msg": msg})

    def received(self, msg: Any) -> None:
        self._write({"t": time.time(), "dir": "recv", "msg": msg})

    def received_raw(self, text: str) -> None:
        self._write({"t": time.time(), "dir": "recv", "raw": text})

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load_recording(path: str) -> list[dict[str, Any]]:
    """Read a recording back; blank lines are skipped, a bad line raises ValueError with its number."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from None
    return entries
