"""What a person sees: the dashboard in a real browser, and the pushed predictions a
client follows across a restart of the service."""

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from service.feed import feed_synthetic

pytestmark = pytest.mark.recovery

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"]


@contextmanager
def synthetic_feed(url: str, tickers: int = 20, rate: float = 300.0) -> Iterator[None]:
    stop = threading.Event()
    feeder = threading.Thread(target=feed_synthetic, daemon=True, kwargs={
        "client": redis.Redis.from_url(url), "stream": "ticks", "tickers": tickers,
        "rate": rate, "stop": stop, "echo": lambda _: None})
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join(10)


def test_the_dashboard_fills_draws_and_moves(service_factory, redis_proc, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    service = service_factory()
    service.start()
    with synthetic_feed(redis_proc.url), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{service.port}/")
        page.wait_for_function("document.querySelectorAll('#table tbody tr').length >= 20",
                               timeout=30_000)
        page.wait_for_function("document.getElementById('state').textContent === 'ready'",
                               timeout=30_000)
        page.click("#table tbody tr >> nth=3")
        ticker = page.inner_text("#table tbody tr.selected td >> nth=0")
        page.wait_for_function("document.querySelectorAll('#price-chart canvas').length > 0 "
                               "&& points.length > 5", timeout=30_000)
        first = page.evaluate("points[points.length - 1].steps")
        page.wait_for_function(f"points[points.length - 1].steps > {first}", timeout=30_000)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))
        browser.close()
    assert not errors, errors
    assert ticker.startswith("SYN")
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("TICKSTREAM_SCREENSHOT_DIR")  # e.g. docs/, for the README
    if keep:
        shutil.copy(shot, Path(keep) / "dashboard.png")
    print(f"\nscreenshot: {shot}")


def read_events(url: str, seconds: float, last_id: str | None = None) -> list[dict]:
    """The `batch` events of /v1/stream for a while (resuming after `last_id`)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events, deadline = [], time.monotonic() + seconds
    with httpx.stream("GET", f"{url}/v1/stream", headers=headers, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if time.monotonic() > deadline:
                break
    return events


def test_the_stream_resumes_across_a_restart_and_misses_nothing(service_factory, redis_proc):
    client = redis.Redis.from_url(redis_proc.url)
    service = service_factory(batch_count="20")
    service.start()
    service.wait_ready()
    url = f"http://127.0.0.1:{service.port}"
    with synthetic_feed(redis_proc.url, rate=400.0):
        before = read_events(url, 3.0)
        service.kill()  # the client's stream breaks with the service
        service.start()
        after = read_events(url, 3.0, last_id=before[-1]["id"])
    service.wait_ready()
    after += read_events(url, 2.0, last_id=after[-1]["id"])  # the tail once the feed stops
    received = [e["id"] for e in before + after]
    assert len(received) == len(set(received)), "an event came twice"
    stored = [i.decode() for i, _ in client.xrange("predictions", min=received[0])]
    assert received == stored, "an event was missed"
    assert len(before) > 5 and len(after) > 5
    assert all(e["predictions"] for e in before + after)
