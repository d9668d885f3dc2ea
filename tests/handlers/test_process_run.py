"""process.run: parsers on real-format lines, fakes (pytest-subprocess) for exit codes and progress,
and real runs of a small Python program for cancel, timeout and process-tree cleanup."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from sidecar.handlers import AppOptions, DetailsError, TaskCancelled, TaskError
from sidecar.handlers import process_run
from sidecar.handlers.process_run import (
    FfmpegParser,
    Progress,
    RegexParser,
    check_details,
    make_parser,
    parse_ffmpeg_duration,
    parse_ytdlp_line,
    run_program,
)

SCRIPT = str(Path(__file__).with_name("tree_script.py"))

# yt-dlp 2024.x with --newline (a merged video+audio download; fragment line from an HLS stream)
YTDLP_LINES = """\
[youtube] Extracting URL: https://www.youtube.com/watch?v=BaW_jenozKc
[youtube] BaW_jenozKc: Downloading webpage
[info] BaW_jenozKc: Downloading 1 format(s): 137+140
[download] Destination: youtube-dl test video [BaW_jenozKc].f137.mp4
[download]   0.0% of    2.06MiB at  Unknown B/s ETA Unknown
[download]   0.1% of    2.06MiB at  488.73KiB/s ETA 00:04
[download]  48.5% of    2.06MiB at    4.41MiB/s ETA 00:00
[download] 100.0% of    2.06MiB at    6.37MiB/s ETA 00:00
[download] 100% of    2.06MiB in 00:00:00 at 4.62MiB/s
[download]  12.3% of ~ 150.00MiB at    2.50MiB/s ETA 00:59 (frag 3/40)
[Merger] Merging formats into "youtube-dl test video [BaW_jenozKc].mp4"
Deleting original file youtube-dl test video [BaW_jenozKc].f137.mp4 (pass -k to keep)
""".splitlines()

# ffmpeg 6.x: the stderr banner, then -progress pipe:1 -nostats blocks on stdout
FFMPEG_STDERR = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'in.mp4':
  Metadata:
    major_brand     : isom
  Duration: 00:00:10.00, start: 0.000000, bitrate: 1205 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 1280x720, 1070 kb/s, 30 fps
Output #0, matroska, to 'out.mkv':
""".splitlines()
FFMPEG_STDOUT = """\
frame=75
fps=0.00
stream_0_0_q=28.0
bitrate=N/A
total_size=N/A
out_time_us=2500000
out_time_ms=2500000
out_time=00:00:02.500000
dup_frames=0
drop_frames=0
speed=4.99x
progress=continue
frame=300
fps=149.20
stream_0_0_q=-1.0
bitrate= 983.2kbits/s
total_size=1228855
out_time_us=10000000
out_time_ms=10000000
out_time=00:00:10.000000
dup_frames=0
drop_frames=0
speed=4.97x
progress=end
""".splitlines()


def test_ytdlp_parser_on_newline_output():
    parsed = [parse_ytdlp_line(line) for line in YTDLP_LINES]
    percents = [p.percent for p in parsed if p and p.percent is not None]
    assert percents == [0.0, 0.1, 48.5, 100.0, 100.0, 12.3]
    assert parsed[6] == Progress(48.5, "48.5% of 2.06MiB at 4.41MiB/s ETA 00:00")
    assert parsed[9].message == "12.3% of ~ 150.00MiB at 2.50MiB/s ETA 00:59 (frag 3/40)"
    assert parsed[3] == Progress(None, "downloading youtube-dl test video [BaW_jenozKc].f137.mp4")
    assert parsed[10].percent is None and parsed[10].message.startswith("Merger: Merging formats")
    assert parsed[0] is None and parsed[11] is None
    assert parse_ytdlp_line("\x1b[0;94m[download]\x1b[0m  42.5% of 10.00MiB").percent == 42.5  # colours


def test_ytdlp_parser_on_progress_template():
    assert "progress.downloaded_bytes" in process_run.YTDLP_PROGRESS_TEMPLATE
    p = parse_ytdlp_line("[progress] 1048576/10485760 524288.0 18")
    assert p == Progress(10.0, "1.0 MiB of 10.0 MiB · 512.0 KiB/s · ETA 0:18")
    assert parse_ytdlp_line("[progress] 1048576/NA NA NA") == Progress(None, "1.0 MiB")
    assert parse_ytdlp_line("[progress]  42.5% 3.2MiB/s").percent == 42.5


def test_ffmpeg_parser():
    assert parse_ffmpeg_duration("  Duration: 01:02:03.50, start: 0.000000, bitrate: 1205 kb/s") == 3723.5
    assert parse_ffmpeg_duration("  Duration: N/A, start: 0.000000") is None
    parser = FfmpegParser()
    for line in FFMPEG_STDERR:
        assert parser.feed(line, "stderr") is None
    assert parser.duration_s == 10.0
    out = [r for r in (parser.feed(line, "stdout") for line in FFMPEG_STDOUT) if r]
    assert out == [Progress(25.0, "0:02 of 0:10 · 4.99x"), Progress(100.0, "0:10 of 0:10 · 4.97x")]
    no_duration = FfmpegParser()
    assert [r for r in (no_duration.feed(line, "stdout") for line in FFMPEG_STDOUT[:12]) if r] == [
        Progress(None, "0:02 · 4.99x")
    ]
    assert FfmpegParser(duration_s=5.0).feed("out_time_us=N/A", "stdout") is None


def test_regex_parser_and_choice():
    p = RegexParser(r"(?P<percent>\d+)%")
    assert p.feed("step 3/10 30%", "stdout") == Progress(30.0, "step 3/10 30%")
    assert p.feed("nothing here", "stdout") is None
    q = RegexParser(r"(?P<done>\d+)/(?P<total>\d+) (?P<message>.*)")
    assert q.feed("3/12 converting", "stderr") == Progress(25.0, "converting")
    assert q.feed("3/0 x", "stderr") is None
    with pytest.raises(ValueError):
        RegexParser(r"(\d+)%")
    assert isinstance(make_parser(None, "yt-dlp"), process_run.YtDlpParser)
    assert isinstance(make_parser(None, "ffmpeg", 3.0), FfmpegParser)
    assert isinstance(make_parser(None, "python"), process_run.NoParser)
    assert isinstance(make_parser({"regex": "(?P<percent>\\d+)"}, "python"), RegexParser)


def test_check_details(tmp_path):
    options = AppOptions(allow_dirs=[str(tmp_path)], allow_programs={"yt-dlp": "/usr/bin/yt-dlp"})
    check_details({"program": "yt-dlp", "args": ["-x"], "cwd": str(tmp_path), "env": {"LANG": "C"}}, options)
    for details, field in [
        ({"program": "bash"}, "program"),
        ({"program": "/usr/bin/yt-dlp"}, "program"),
        ({"program": "yt-dlp", "cwd": "/"}, "cwd"),
        ({"program": "yt-dlp", "cwd": str(tmp_path / ".." / "x")}, "cwd"),
        ({"program": "yt-dlp", "env": {"LD_PRELOAD": "/tmp/x.so"}}, "env.LD_PRELOAD"),
        ({"program": "yt-dlp", "env": {"PythonPath": "/tmp"}}, "env.PythonPath"),
        # an exported bash function replaces a command a wrapper script runs
        ({"program": "yt-dlp", "env": {"BASH_FUNC_echo%%": "() { id; }"}}, "env.BASH_FUNC_echo%%"),
        ({"program": "yt-dlp", "env": {"FOO": " () { id; }"}}, "env.FOO"),
        *[({"program": "yt-dlp", "env": {name: "x"}}, f"env.{name}") for name in (
            "PERL5DB", "PERLLIB", "RUBYLIB", "NODE_PATH", "GCONV_PATH", "JAVA_TOOL_OPTIONS", "LUA_INIT",
            "OPENSSL_CONF", "GIT_SSH_COMMAND")],
        ({"program": "yt-dlp", "parser": {"regex": "("}}, "parser.regex"),
        ({"program": "yt-dlp", "parser": {"regex": "no groups"}}, "parser.regex"),
    ]:
        with pytest.raises(DetailsError) as err:
            check_details(details, options)
        assert err.value.field == field


# ------------------------------------------------------------------ fakes


def test_fake_ytdlp_progress_and_argv(fp, recorder):
    fp.register(["/opt/yt-dlp", fp.any()], stdout=YTDLP_LINES, stderr=[b"WARNING: something minor"])
    rec = recorder(options=AppOptions(allow_programs={"yt-dlp": "/opt/yt-dlp"}))
    result = run_program(rec.ctx, "yt-dlp", ["--newline", "-o", "x.mp4", "https://example.com/v"])
    assert result == {"exitCode": 0, "stdoutTail": YTDLP_LINES[-8:]}
    assert fp.calls[0] == ["/opt/yt-dlp", "--newline", "-o", "x.mp4", "https://example.com/v"]
    assert [p for p, _ in rec.progress] == [0.0, 0.0, 0.1, 48.5, 100.0, 100.0, 12.3, 12.3]
    assert rec.progress[3][1] == "48.5% of 2.06MiB at 4.41MiB/s ETA 00:00"


def test_fake_ffmpeg_progress_with_duration_from_stderr(fp, recorder):
    fp.register(["/opt/ffmpeg", fp.any()], stdout=FFMPEG_STDOUT, stderr=FFMPEG_STDERR)
    rec = recorder(options=AppOptions(allow_programs={"ffmpeg": "/opt/ffmpeg"}))
    # the fake delivers stdout and stderr at once, so the Duration line may come after the first
    # block; a durationS from the task makes the percent independent of that ordering
    run_program(rec.ctx, "ffmpeg", ["-i", "in.mp4", "-progress", "pipe:1", "-nostats", "out.mkv"], duration_s=10.0)
    assert rec.progress == [(25.0, "0:02 of 0:10 · 4.99x"), (100.0, "0:10 of 0:10 · 4.97x")]


def test_fake_failure_puts_stderr_tail_in_error(fp, recorder):
    fp.register(
        ["/opt/yt-dlp", fp.any()],
        stdout=["[youtube] Extracting URL: https://example.com/v"],
        stderr=[f"noise {i}" for i in range(30)] + ["ERROR: Unsupported URL: https://example.com/v"],
        returncode=1,
    )
    rec = recorder(options=AppOptions(allow_programs={"yt-dlp": "/opt/yt-dlp"}))
    with pytest.raises(TaskError) as err:
        run_program(rec.ctx, "yt-dlp", ["https://example.com/v"])
    text = str(err.value)
    assert text.startswith("yt-dlp exited with code 1:\n") and text.endswith("ERROR: Unsupported URL: https://example.com/v")
    assert "noise 0\n" not in text and "noise 29" in text and err.value.retryable is True


def test_missing_binary_and_unlisted_program(recorder, tmp_path):
    rec = recorder(options=AppOptions(allow_programs={"yt-dlp": str(tmp_path / "no-such-yt-dlp")}))
    with pytest.raises(TaskError, match="cannot start yt-dlp") as err:
        run_program(rec.ctx, "yt-dlp", ["x"])
    assert err.value.retryable is False
    with pytest.raises(TaskError, match="not allowed"):
        run_program(rec.ctx, "ffmpeg", [])


def test_fakes_never_get_a_process_group(fp):
    import subprocess

    fp.register(["/opt/tool"], stdout=["x"], occurrences=3)
    for _ in range(3):
        proc = subprocess.Popen(["/opt/tool"], stdout=subprocess.PIPE)
        assert process_run.own_group(proc) is None  # pids 1, 2, … are not ours
        proc.wait()


def test_fake_regex_parser_and_exit_codes(fp, recorder):
    opts = AppOptions(allow_programs={"tool": "/opt/tool"})
    fp.register(["/opt/tool", "ok"], stdout=["10%", "garbage", "60%", "100%"], returncode=0)
    fp.register(["/opt/tool", "bad"], stdout=["10%"], stderr=["boom"], returncode=3)
    rec = recorder(options=opts)
    run_program(rec.ctx, "tool", ["ok"], parser={"regex": r"(?P<percent>\d+)%"})
    assert [p for p, _ in rec.progress] == [10.0, 60.0, 100.0]
    with pytest.raises(TaskError, match=r"tool exited with code 3:\nboom"):
        run_program(recorder(options=opts).ctx, "tool", ["bad"], parser={"regex": r"(?P<percent>\d+)%"})


# ------------------------------------------------------------------ real processes


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def read_pids(pidfile: Path) -> list[int]:
    wait_for(pidfile.exists)
    return [int(p) for p in pidfile.read_text().split()]


posix_only = pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")


@pytest.fixture
def python_opts(tmp_path) -> AppOptions:
    return AppOptions(allow_dirs=[str(tmp_path)], allow_programs={"python": sys.executable})


def run_in_thread(fn, *args, **kwargs):
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@posix_only
@pytest.mark.parametrize("reason", ["cancel", "pause"])
def test_stop_kills_the_whole_tree(recorder, python_opts, tmp_path, reason):
    pidfile = tmp_path / "pids"
    rec = recorder(options=python_opts)
    thread, box = run_in_thread(run_program, rec.ctx, "python", [SCRIPT, str(pidfile)],
                                parser={"regex": r"(?P<percent>\d+)%"})
    pids = read_pids(pidfile)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    wait_for(lambda: rec.progress)
    rec.ctx.request_stop(reason)
    thread.join(20)
    assert not thread.is_alive() and isinstance(box.get("error"), TaskCancelled)
    wait_for(lambda: not any(alive(p) for p in pids))


@posix_only
def test_term_ignoring_tree_is_killed_after_the_grace(recorder, python_opts, tmp_path, monkeypatch):
    monkeypatch.setattr(process_run, "KILL_GRACE_S", 0.5)
    pidfile = tmp_path / "pids"
    rec = recorder(options=python_opts)
    thread, box = run_in_thread(run_program, rec.ctx, "python", [SCRIPT, str(pidfile), "--ignore-term"])
    pids = read_pids(pidfile)
    rec.ctx.request_stop("cancel")
    thread.join(20)
    assert isinstance(box.get("error"), TaskCancelled)
    wait_for(lambda: not any(alive(p) for p in pids))


@posix_only
def test_timeout_kills_the_tree_and_fails_retryably(recorder, python_opts, tmp_path):
    pidfile = tmp_path / "pids"
    rec = recorder(options=python_opts)
    with pytest.raises(TaskError, match="python timed out after 1s") as err:
        run_program(rec.ctx, "python", [SCRIPT, str(pidfile)], timeout_s=1.0)
    assert err.value.retryable is True
    wait_for(lambda: not any(alive(p) for p in read_pids(pidfile)))


@posix_only
def test_exit_leftovers_are_cleaned_and_exit_code_decides(recorder, python_opts, tmp_path):
    pidfile = tmp_path / "pids"
    rec = recorder(options=python_opts)
    result = run_program(rec.ctx, "python", [SCRIPT, str(pidfile), "--steps", "3", "--delay", "0"],
                         parser={"regex": r"(?P<percent>\d+)%"}, cwd=str(tmp_path))
    assert result["exitCode"] == 0 and result["stdoutTail"][-1] == "step 3/3 100%"
    assert rec.progress[-1] == (100.0, "step 3/3 100%")
    wait_for(lambda: not any(alive(p) for p in read_pids(pidfile)))  # the sleeping grandchild too
    with pytest.raises(TaskError, match=r"python exited with code 4:\nsome warning on stderr\nfatal: it broke"):
        run_program(recorder(options=python_opts).ctx, "python",
                    [SCRIPT, str(tmp_path / "p2"), "--steps", "1", "--delay", "0", "--exit", "4", "--no-child"])


@posix_only
def test_engine_stop_reason_timeout_kills_tree(recorder, python_opts, tmp_path):
    # the engine's own timeout (a handler's timeout_s) arrives as a stop with reason "timeout"
    pidfile = tmp_path / "pids"
    rec = recorder(options=python_opts)
    thread, box = run_in_thread(run_program, rec.ctx, "python", [SCRIPT, str(pidfile)])
    pids = read_pids(pidfile)
    rec.ctx.request_stop("timeout")
    thread.join(20)
    assert isinstance(box.get("error"), TaskCancelled)
    wait_for(lambda: not any(alive(p) for p in pids))


DETACHING = """
import subprocess, sys
# a daemon in a session of its own, holding the inherited stdout and stderr
daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"], start_new_session=True)
open(sys.argv[1], "w").write(str(daemon.pid))
print("done")
"""


@posix_only
def test_a_program_that_leaves_a_detached_daemon_holding_its_output_ends_when_it_exits(recorder, tmp_path):
    rec = recorder(options=AppOptions(allow_programs={"python": sys.executable}))
    pidfile = tmp_path / "daemon.pid"
    started = time.monotonic()
    try:
        result = run_program(rec.ctx, "python", ["-c", DETACHING, str(pidfile)])
        took = time.monotonic() - started
        assert result["exitCode"] == 0 and result["stdoutTail"] == ["done"]
        assert took < 10, f"the task lasted as long as the daemon ({took:.1f} s)"
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)
