"""The `tickstream` commands as a user types them: help, refusals, and feeding a real Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner, Result

from service.cli import app
from service.config import Settings
from service.embedded_redis import free_port

runner = CliRunner()


def said(result: Result) -> str:
    """The output as one line of words: rich wraps error panels at 80 columns."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


@pytest.fixture(autouse=True)
def _no_tickstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's TICKSTREAM_* variables must not change what these commands do."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"TICKSTREAM_{name.upper()}", raising=False)


@pytest.mark.parametrize(("command", "flags"), [
    (["serve"], ["--synthetic-feed", "--model-dir", "--redis-url"]),
    (["train"], ["--csv", "--synthetic", "--units", "--epochs", "--look-back", "--out"]),
    (["feed"], ["--synthetic", "--csv", "--tickers", "--rate", "--count", "--speed"]),
    (["bench", "step"], ["--sizes", "--units", "--steps"]),
    (["bench", "e2e"], ["--quick"]),
])
def test_help_lists_the_flags(command: list[str], flags: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    for flag in flags:
        assert flag in result.output


def test_every_setting_is_a_serve_flag() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in said(result), name


@pytest.mark.parametrize(("args", "says"), [
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--start-from", "middle"], "begin"),
    (["serve", "--api-key", "short"], "at least 8 characters"),
    (["train", "--out", "x"], "exactly one of --csv FILE or --synthetic"),
    (["train", "--out", "x", "--synthetic", "--units", "32,zero"], "positive integers"),
    (["train", "--out", "x", "--synthetic", "--units", "0"], "positive integers"),
    (["feed"], "exactly one of --synthetic or --csv"),
    (["feed", "--synthetic"], "TICKSTREAM_REDIS_URL"),
    (["feed", "--synthetic", "--rate", "-1", "--redis-url", "redis://x"], "--rate"),
    (["feed", "--csv", "no/such/file.csv", "--redis-url", "redis://x"], "does not exist"),
    (["bench", "step", "--sizes", "ten"], "positive integers"),
    (["replay", "--out", "x.csv"], "exactly one of --csv FILE or --from-redis"),
    (["replay", "--out", "x.csv", "--from-redis"], "TICKSTREAM_REDIS_URL"),
    (["replay", "--out", "x.csv", "--csv", "no/such.csv"], "does not exist"),
    (["replay", "--out", "x.csv", "--from-redis", "--learn-window", "0"], "--learn-window"),
    (["export", "--out", "x"], "TICKSTREAM_REDIS_URL"),
])
def test_bad_input_exits_2_with_a_message_not_a_traceback(args: list[str], says: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert says in said(result)
    assert "Traceback" not in result.output


def test_train_refuses_a_csv_without_the_needed_columns(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("symbol,time,px\nA,1,2\n")
    result = runner.invoke(app, ["train", "--csv", str(csv), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "header needs ticker, ts, price" in said(result)


def test_serve_refuses_a_missing_model_dir(redis_url: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--redis-url", redis_url,
                                 "--model-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not found: an artifact is" in said(result)


def test_serve_refuses_state_another_model_wrote(redis_url: str, redis_client: redis.Redis,
                                                 small_artifact_dir: Path) -> None:
    redis_client.set("tickstream:default:model", "0123456789abcdef")
    result = runner.invoke(app, ["serve", "--redis-url", redis_url,
                                 "--model-dir", str(small_artifact_dir)])
    assert result.exit_code == 2 and "pick another TICKSTREAM_NAME" in said(result)
    assert redis_client.get("tickstream:default:model") == b"0123456789abcdef"  # untouched


def test_feed_to_an_unreachable_redis_exits_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["feed", "--synthetic", "--count", "1", "--redis-url", url])
    assert result.exit_code == 1 and "cannot reach Redis" in said(result)


def test_feed_synthetic_count_appends_exactly_count(redis_url: str,
                                                    redis_client: redis.Redis) -> None:
    result = runner.invoke(app, ["feed", "--synthetic", "--tickers", "3", "--rate", "0",
                                 "--count", "2500", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert "2,500 ticks sent" in result.output
    entries = redis_client.xrange("ticks")
    assert len(entries) == 2500
    assert {f[b"ticker"] for _, f in entries} == {b"SYN0000", b"SYN0001", b"SYN0002"}
    assert all(b"ts" not in f and float(f[b"price"]) > 0 for _, f in entries)


def test_feed_csv_replays_in_ts_order_and_reports_skipped(redis_url: str,
                                                          redis_client: redis.Redis,
                                                          tmp_path: Path) -> None:
    csv = tmp_path / "ticks.csv"
    csv.write_text("ticker,ts,price,volume\nB,3000,2.5,1\nA,1000,1.5,\nA,2000,nan,3\n"
                   "a,2500,1.75,2\n")
    result = runner.invoke(app, ["feed", "--csv", str(csv), "--speed", "0",
                                 "--redis-url", redis_url, "--stream", "replay"])
    assert result.exit_code == 0, result.output
    assert "bad_price" in result.output
    rows = [(f[b"ticker"], f[b"ts"], f[b"price"]) for _, f in redis_client.xrange("replay")]
    assert rows == [(b"A", b"1000", b"1.5"), (b"A", b"2500", b"1.75"), (b"B", b"3000", b"2.5")]
