"""The quick end-to-end benchmark as a smoke test: it must drain every tick and produce
every figure. No speed is asserted: this machine is shared and its timings are noise."""

import math

import pytest

from bench import e2e

pytestmark = pytest.mark.bench


def test_quick_bench_drains_everything_and_reports_every_figure() -> None:
    res = e2e.run(e2e.QUICK, say=print)

    assert e2e.check(res) == []
    for label, runs in res.drain.items():
        for run in runs["engine"]:  # run_drain also refuses a drain that missed a tick
            assert run.applied == e2e.QUICK.drain_ticks, label
        for run in runs["engine"] + runs["bare"]:
            assert run.rate() > 0, label
    assert all(rate > 0 for rate in res.naive)
    assert set(res.latency) == {"floor", "after", "poll"}
    for runs in res.latency.values():
        assert all(r.probes > 0 and math.isfinite(r.p99_ms) for r in runs)
    assert res.latency_everysec is not None and res.latency_everysec.probes > 0
    assert set(res.rss_kb) == set(e2e.QUICK.memory_tickers)
    for mem in res.rss_kb.values():  # its own and mapped files: parts of the RSS
        assert 0 < mem.anon < mem.rss <= mem.peak and 0 < mem.file < mem.rss
        assert mem.anon + mem.file <= mem.rss
    assert res.growth is not None and len(res.growth.samples) >= 2
    assert res.http_skipped or set(res.http) == {"bare", "idle", "ingesting"}
    table = e2e.table(res)
    assert table.count("\n| ") >= 10 and "nan" not in table
