"""An app-shaped example: import a playlist, download every entry as a child task.

Load it by its path (``--handlers`` takes a module name or a ``.py`` file)::

    task-sidecar --db x.db --handlers docs/examples/playlistify_handlers.py \\
        --allow-dir ~/Videos --allow-program yt-dlp=/usr/bin/yt-dlp

then, over the protocol::

    {"jsonrpc":"2.0","id":1,"method":"tasks.create","params":{"type":"IMPORT_PLAYLIST",
     "details":{"source":"https://example.com/mix.m3u","destDir":"/home/me/Videos/Mix"}}}

``IMPORT_PLAYLIST`` reads the playlist (a local JSON or M3U file inside an allowed directory, or an
http(s) URL), then spawns one ``DOWNLOAD_VIDEO`` child per entry in one transaction; the parent's
progress is the aggregate of its children and it completes when they have. ``DOWNLOAD_VIDEO`` uses
the built-in building blocks: :func:`sidecar.handlers.http_download.download` for direct media
URLs (resumable, verified), or :func:`sidecar.handlers.process_run.run_program` with yt-dlp (when
the app allowed it) for pages yt-dlp understands. Both confine files to ``--allow-dir``.

Playlist formats:

* JSON: ``{"title": "Mix", "entries": [{"url": …, "title"?: …, "filename"?: …, "sha256"?: …}]}``
  or just the list of entries (or of URLs).
* M3U / M3U8: ``#EXTINF:123,Artist - Title`` lines followed by the URL (or a path relative to the URL
  of the playlist).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import urllib.parse
from typing import Any

from sidecar.handlers import AppOptions, DetailsError, TaskContext, TaskError, handler
from sidecar.handlers.http_download import check_dest, check_url, download, remove_partial
from sidecar.handlers.process_run import run_program

MAX_PLAYLIST_BYTES = 10 * 1024 * 1024
MAX_ENTRIES = 5000
MEDIA_EXTENSIONS = {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mp3", ".m4a", ".aac", ".ogg", ".opus",
                    ".flac", ".wav", ".bin"}


# ------------------------------------------------------------------ parsing (pure)


def parse_playlist(text: str, base_url: str | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """JSON or M3U text → (title, [{"url", "title"?, "filename"?, "sha256"?}])."""
    stripped = text.lstrip("\ufeff").strip()
    if stripped.startswith(("{", "[")):
        data = json.loads(stripped)
        title = data.get("title") if isinstance(data, dict) else None
        raw = data.get("entries", []) if isinstance(data, dict) else data
        entries = []
        for item in raw:
            entry = {"url": item} if isinstance(item, str) else dict(item)
            if not isinstance(entry.get("url"), str):
                raise ValueError(f"entry {len(entries) + 1} has no url")
            entries.append({k: entry[k] for k in ("url", "title", "filename", "sha256") if entry.get(k)})
        return title, entries
    title, entries, pending_title = None, [], None
    for line in stripped.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.upper().startswith("#EXTINF:"):
                pending_title = line.partition(",")[2].strip() or None
            elif line.upper().startswith("#PLAYLIST:"):
                title = line.partition(":")[2].strip() or None
            continue
        url = urllib.parse.urljoin(base_url, line) if base_url else line
        entries.append({"url": url, **({"title": pending_title} if pending_title else {})})
        pending_title = None
    return title, entries


def safe_filename(name: str, limit: int = 120) -> str:
    """A file name that is valid on Windows, macOS and Linux."""
    name = re.sub(r'[\x00-\x1f<>:"/\\|?*]', "_", name).strip().strip(".")
    if name.upper().split(".")[0] in {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                                      *(f"LPT{i}" for i in range(1, 10))}:
        name = "_" + name
    return name[:limit].rstrip(" .") or "untitled"


def entry_filename(index: int, entry: dict[str, Any]) -> str:
    if entry.get("filename"):
        return safe_filename(entry["filename"])
    path = urllib.parse.urlsplit(entry["url"]).path
    base = posixpath.basename(path)
    ext = posixpath.splitext(base)[1].lower()
    ext = ext if ext in MEDIA_EXTENSIONS else ".mp4"
    title = entry.get("title") or posixpath.splitext(urllib.parse.unquote(base))[0] or f"video {index}"
    return safe_filename(f"{index:03d} - {title}", 110) + ext


def is_direct_media(url: str) -> bool:
    return posixpath.splitext(urllib.parse.urlsplit(url).path)[1].lower() in MEDIA_EXTENSIONS


# ------------------------------------------------------------------ policy


def check_dir(path: str, options: AppOptions) -> str:
    """A directory inside (or equal to) an allowed one; returns its real path."""
    return os.path.dirname(check_dest(os.path.join(path, "x"), options.allow_dirs))


def _is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def check_import(details: dict[str, Any], options: AppOptions) -> None:
    try:
        check_dir(details["destDir"], options)
    except ValueError as exc:
        raise DetailsError("destDir", str(exc)) from None
    source = details["source"]
    try:
        if _is_url(source):
            check_url(source, options.allow_hosts)
        else:
            check_dest(source, options.allow_dirs)  # a local playlist must be inside an allowed directory
    except ValueError as exc:
        raise DetailsError("source", str(exc)) from None
    if details.get("via") == "yt-dlp" and "yt-dlp" not in options.allow_programs:
        raise DetailsError("via", "yt-dlp is not allowed (--allow-program yt-dlp=PATH)")


def check_video(details: dict[str, Any], options: AppOptions) -> None:
    try:
        check_url(details["url"], options.allow_hosts)
    except ValueError as exc:
        raise DetailsError("url", str(exc)) from None
    try:
        check_dest(details["dest"], options.allow_dirs)
    except ValueError as exc:
        raise DetailsError("dest", str(exc)) from None
    if details.get("via") == "yt-dlp" and "yt-dlp" not in options.allow_programs:
        raise DetailsError("via", "yt-dlp is not allowed (--allow-program yt-dlp=PATH)")


# ------------------------------------------------------------------ handlers


@handler(
    "IMPORT_PLAYLIST",
    max_attempts=3,
    details_schema={
        "type": "object",
        "required": ["source", "destDir"],
        "properties": {
            "source": {"type": "string", "minLength": 1, "maxLength": 8192},
            "destDir": {"type": "string", "minLength": 1, "maxLength": 4096},
            "via": {"enum": ["auto", "http", "yt-dlp"], "default": "auto"},
        },
        "additionalProperties": False,
    },
    check_details=check_import,
)
def import_playlist(ctx: TaskContext) -> dict[str, Any]:
    details = ctx.details
    options = ctx.options or AppOptions()
    try:
        dest_dir = check_dir(details["destDir"], options)
    except ValueError as exc:
        raise TaskError(f"destDir: {exc}", retryable=False) from None
    source = details["source"]
    ctx.progress(0, "reading the playlist")
    if _is_url(source):
        # the playlist itself goes through http.download (host checks, retries), into a hidden file
        scratch = os.path.join(dest_dir, f".playlist-{ctx.id[:8]}")
        got = download(ctx, source, scratch)
        try:
            with open(got["path"], "rb") as f:
                raw = f.read(MAX_PLAYLIST_BYTES + 1)
        finally:
            os.remove(got["path"])
        base_url = got["url"]
    else:
        try:
            path = check_dest(source, options.allow_dirs)
        except ValueError as exc:
            raise TaskError(f"source: {exc}", retryable=False) from None
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_PLAYLIST_BYTES + 1)
        except OSError as exc:
            raise TaskError(f"cannot read {source}: {exc}", retryable=False) from None
        base_url = None
    if len(raw) > MAX_PLAYLIST_BYTES:
        raise TaskError("the playlist is larger than 10 MiB", retryable=False)
    try:
        title, entries = parse_playlist(raw.decode("utf-8", "replace"), base_url)
    except (ValueError, AttributeError, TypeError) as exc:
        raise TaskError(f"not a playlist: {exc}", retryable=False) from None
    if not entries:
        raise TaskError("the playlist has no entries", retryable=False)
    if len(entries) > MAX_ENTRIES:
        raise TaskError(f"the playlist has {len(entries)} entries (at most {MAX_ENTRIES})", retryable=False)
    children = []
    for index, entry in enumerate(entries, 1):
        child = {"url": entry["url"], "dest": os.path.join(dest_dir, entry_filename(index, entry)),
                 "via": details.get("via", "auto")}
        if entry.get("title"):
            child["title"] = str(entry["title"])[:500]
        if entry.get("sha256"):
            child["sha256"] = entry["sha256"]
        children.append({"type": "DOWNLOAD_VIDEO", "details": child})
    # one transaction; a re-run after a crash spawns the same keys again, so no duplicates
    ctx.spawn_many(children)
    ctx.progress(0, f"{len(children)} videos")
    return {"title": title, "entries": len(children), "destDir": dest_dir}


def remove_video_partials(task_id: str, details: dict[str, Any], options: AppOptions) -> None:
    """The end hook: a video cancelled while paused or waiting out a retry, or failed by crash
    recovery, leaves no partial file: neither http.download's nor yt-dlp's (``--continue``)."""
    remove_partial(task_id, details, options)
    try:
        dest = check_dest(details.get("dest"), options.allow_dirs)  # type: ignore[arg-type]
    except ValueError:
        return  # never a path outside the allowed directories
    for leftover in (f"{dest}.part", f"{dest}.ytdl"):
        try:
            os.remove(leftover)
        except (FileNotFoundError, NotADirectoryError):
            pass


@handler(
    "DOWNLOAD_VIDEO",
    concurrency=3,
    max_attempts=5,
    retry_base_s=2.0,
    retry_max_s=120.0,
    timeout_s=6 * 3600,
    details_schema={
        "type": "object",
        "required": ["url", "dest"],
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 8192},
            "dest": {"type": "string", "minLength": 1, "maxLength": 4096},
            "title": {"type": "string", "maxLength": 500},
            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
            "via": {"enum": ["auto", "http", "yt-dlp"], "default": "auto"},
        },
        "additionalProperties": False,
    },
    check_details=check_video,
    on_end=remove_video_partials,
)
def download_video(ctx: TaskContext) -> dict[str, Any]:
    details = ctx.details
    options = ctx.options or AppOptions()
    via = details.get("via", "auto")
    if via == "auto":
        via = "yt-dlp" if "yt-dlp" in options.allow_programs and not is_direct_media(details["url"]) else "http"
    if via == "http":
        result = download(ctx, details["url"], details["dest"], sha256=details.get("sha256"))
        return {"path": result["path"], "bytes": result["bytes"], "via": "http"}
    try:
        dest = check_dest(details["dest"], options.allow_dirs)
    except ValueError as exc:
        raise TaskError(f"dest: {exc}", retryable=False) from None
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    args = [
        "--newline", "--no-colors", "--no-playlist", "--continue", "--no-exec",
        "-o", dest.replace("%", "%%"),  # an output template: a literal % must be doubled
        "--", details["url"],
    ]
    run_program(ctx, "yt-dlp", args, parser="yt-dlp", cwd=os.path.dirname(dest))
    return {"path": dest, "via": "yt-dlp"}
