"""The command line: what it accepts and refuses (exit 2 from argparse, before anything starts)."""

from __future__ import annotations

import pytest

from sidecar.cli import MAX_CONCURRENCY, parser


def test_concurrency_is_bounded_like_queue_set_concurrency(capsys) -> None:
    assert parser().parse_args(["--concurrency", str(MAX_CONCURRENCY)]).concurrency == MAX_CONCURRENCY
    for bad in ("0", str(MAX_CONCURRENCY + 1), "many"):
        with pytest.raises(SystemExit) as exit_:
            parser().parse_args(["--concurrency", bad])
        assert exit_.value.code == 2
    assert f"must be at most {MAX_CONCURRENCY}" in capsys.readouterr().err


def test_log_level_takes_any_case() -> None:
    assert parser().parse_args(["--log-level", "debug"]).log_level == "DEBUG"
    with pytest.raises(SystemExit):
        parser().parse_args(["--log-level", "chatty"])
