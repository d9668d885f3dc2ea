"""docs/examples/playlistify_handlers.py: parsing, and a whole import through a real sidecar."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

import pytest

from sidecar.handlers.registry import load_modules
from tests.sidecar_client import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "playlistify_handlers.py"


load_modules([str(EXAMPLE)])  # the sidecar's own loader, as --handlers uses it
_example = sys.modules["playlistify_handlers"]
entry_filename, is_direct_media = _example.entry_filename, _example.is_direct_media
parse_playlist, safe_filename = _example.parse_playlist, _example.safe_filename

FAKE_YTDLP = """#!{python}
# Stands in for yt-dlp: writes the file named by -o, prints --newline progress like yt-dlp does.
import sys, time
args = sys.argv[1:]
dest = args[args.index("-o") + 1].replace("%%", "%")
url = args[args.index("--") + 1]
print("[generic] Extracting URL: " + url, flush=True)
print("[download] Destination: " + dest, flush=True)
for p in ("0.0", "50.0", "100.0"):
    print(f"[download] {{p:>5}}% of    1.00KiB at    1.00MiB/s ETA 00:00", flush=True)
    time.sleep(0.05)
with open(dest, "w") as f:
    f.write("video from " + url)
"""


def test_parse_json_and_m3u():
    title, entries = parse_playlist(json.dumps({"title": "Mix", "entries": [
        {"url": "https://h/a.mp4", "title": "A", "extra": 1}, "https://h/b.webm"]}))
    assert title == "Mix" and entries == [{"url": "https://h/a.mp4", "title": "A"}, {"url": "https://h/b.webm"}]
    m3u = "\ufeff#EXTM3U\n#PLAYLIST:Road trip\n#EXTINF:215,Artist - Song\nsongs/1.mp3\n\nhttps://o/2.mp3\n"
    title, entries = parse_playlist(m3u, "https://h/lists/trip.m3u")
    assert title == "Road trip"
    assert entries == [{"url": "https://h/lists/songs/1.mp3", "title": "Artist - Song"}, {"url": "https://o/2.mp3"}]
    with pytest.raises(ValueError):
        parse_playlist('[{"title": "no url"}]')


def test_file_names():
    assert safe_filename('a/b:c*?"<>|.') == "a_b_c______"
    assert safe_filename("CON.mp4") == "_CON.mp4" and safe_filename("...") == "untitled"
    assert entry_filename(3, {"url": "https://h/v/clip.webm?x=1", "title": "My: clip"}) == "003 - My_ clip.webm"
    assert entry_filename(1, {"url": "https://youtu.be/abc"}) == "001 - abc.mp4"
    assert entry_filename(1, {"url": "https://h/x", "filename": "../../evil"}) == "_.._evil"
    assert is_direct_media("https://h/a.MP4") and not is_direct_media("https://www.youtube.com/watch?v=x")


def test_import_a_playlist_through_the_sidecar(start_sidecar, http_server, tmp_path):
    videos = tmp_path / "Videos"
    videos.mkdir()
    fake = tmp_path / "bin" / "yt-dlp"
    fake.parent.mkdir()
    fake.write_text(FAKE_YTDLP.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    a, b = os.urandom(300_000), os.urandom(1000)
    http_server.add("/media/a.mp4", a)
    http_server.add("/media/b.webm", b, drop_at=500, drops=1)  # retried and resumed by the child
    playlist = {"title": "Mix", "entries": [
        {"url": "/media/a.mp4", "title": "First", "sha256": hashlib.sha256(a).hexdigest()},
        {"url": "/media/b.webm"},
        {"url": "/watch?v=xyz", "title": "A page"},  # not a media file: yt-dlp's job
    ]}
    for entry in playlist["entries"]:
        entry["url"] = http_server.base + entry["url"]
    url = http_server.add("/lists/mix.json", json.dumps(playlist).encode())
    sidecar = start_sidecar("--handlers", str(EXAMPLE), "--allow-dir", str(videos),
                            "--allow-program", f"yt-dlp={fake}")

    err = sidecar.error("tasks.create", {"type": "IMPORT_PLAYLIST",
                                         "details": {"source": "/etc/hosts", "destDir": str(videos)}})
    assert err.code == -32602 and err.data["field"] == "details.source"
    err = sidecar.error("tasks.create", {"type": "IMPORT_PLAYLIST", "details": {"source": url, "destDir": "/tmp"}})
    assert err.code == -32602 and err.data["field"] == "details.destDir"

    parent = sidecar.call("tasks.create", {"type": "IMPORT_PLAYLIST",
                                           "details": {"source": url, "destDir": str(videos / "Mix")}})
    done = sidecar.wait_status(parent["id"], "COMPLETED", "FAILED", timeout=40)
    assert done["status"] == "COMPLETED", done
    mix = videos / "Mix"
    assert (mix / "001 - First.mp4").read_bytes() == a
    assert (mix / "002 - b.webm").read_bytes() == b
    assert (mix / "003 - A page.mp4").read_text() == f"video from {http_server.base}/watch?v=xyz"
    assert sorted(p.name for p in mix.iterdir()) == ["001 - First.mp4", "002 - b.webm", "003 - A page.mp4"]
    children = sidecar.call("tasks.get", {"id": parent["id"], "include": ["children"]})["children"]
    assert [c["result"]["via"] for c in children] == ["http", "http", "yt-dlp"]
    assert [c["attempt"] for c in children] == [1, 2, 1]
    messages = [u["message"] for u in sidecar.updates(children[2]["id"]) if u["message"]]
    assert any("% of" in m for m in messages)

    m3u = videos / "local.m3u"
    m3u.write_text(f"#EXTM3U\n#EXTINF:1,Again\n{http_server.base}/media/a.mp4\n")
    again = sidecar.call("tasks.create", {"type": "IMPORT_PLAYLIST",
                                          "details": {"source": str(m3u), "destDir": str(videos / "Local")}})
    assert sidecar.wait_status(again["id"], "COMPLETED", "FAILED", timeout=30)["status"] == "COMPLETED"
    assert (videos / "Local" / "001 - Again.mp4").read_bytes() == a


def test_a_video_paused_then_cancelled_leaves_no_partial_file(start_sidecar, http_server, tmp_path):
    videos = tmp_path / "Videos"
    videos.mkdir()
    url = http_server.add("/media/slow.mp4", os.urandom(2_000_000), chunk=64 * 1024, delay=0.05)
    sidecar = start_sidecar("--handlers", str(EXAMPLE), "--allow-dir", str(videos))
    video = sidecar.call("tasks.create", {"type": "DOWNLOAD_VIDEO",
                                          "details": {"url": url, "dest": str(videos / "v.mp4"), "via": "http"}})
    sidecar.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == video["id"]
                              and (m["params"]["task"]["progress"] or 0) > 0, timeout=30)
    sidecar.call("tasks.pause", {"id": video["id"]})
    sidecar.wait_status(video["id"], "PAUSED", timeout=15)
    assert [p.name for p in videos.iterdir()] == [f"v.mp4.{video['id'][:8]}.part"]  # kept for the resume
    sidecar.call("tasks.cancel", {"id": video["id"]})
    assert sidecar.wait_status(video["id"], "CANCELLED", timeout=15)
    assert list(videos.iterdir()) == []
