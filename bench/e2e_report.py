"""The end-to-end run's report: its figures as a Markdown table (median of the rounds,
the baseline of the same run, the ratio, the target), and the check a smoke test makes."""

from __future__ import annotations

from bench.e2e_setup import Results, median, paired, selected_cases
from bench.model import UNITS


def latency_rows(res: Results) -> list[tuple[str, str, str, str, str]]:
    """Medians over the rounds; each probe against the floor of the same round."""
    floor = res.latency.get("floor", [])
    rows = []
    for probe, label, target in (("after", "one GET ?after= (read-your-writes)",
                                  "p50 ≤ 2, p99 ≤ 10"),
                                 ("poll", "polling GET every 0.2 ms", "")):
        runs = res.latency.get(probe, [])
        if not runs:
            continue
        base = (f"floor {median([f.p50_ms for f in floor]):.2f} / "
                f"{median([f.p99_ms for f in floor]):.2f} (XADD alone "
                f"{median([f.xadd_p50_ms for f in floor]):.2f})" if floor else "")
        ratio = (f"{median([r.p50_ms / f.p50_ms for r, f in zip(runs, floor, strict=True)]):.2f}x"
                 if len(floor) == len(runs) else "")
        rows.append((f"latency XADD → visible, {label}, at {runs[0].rate:,.0f} ticks/s, "
                     "p50 / p99 / max (ms)",
                     f"{median([r.p50_ms for r in runs]):.2f} / "
                     f"{median([r.p99_ms for r in runs]):.2f} / "
                     f"{max(r.max_ms for r in runs):.2f}", base, ratio, target))
    lat = res.latency_everysec
    if lat is not None:
        rows.append(("latency XADD → visible, one GET ?after=, Redis fsync everysec, "
                     "p50 / p99 / max (ms)",
                     f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f} / {lat.max_ms:.2f}",
                     f"{lat.probes} probes", "", ""))
    return rows


def table(res: Results) -> str:
    """The figures as a Markdown table: median, baseline, ratio, target."""
    cfg = res.config
    rows: list[tuple[str, str, str, str, str]] = []
    for case in selected_cases(cfg):
        runs = res.drain.get(case.label, {"bare": [], "engine": []})
        bare = median([r.rate() for r in runs["bare"]])
        engine = median([r.rate() for r in runs["engine"]])
        rows.append((f"drain, {case.label} (ticks/s)", f"{engine:,.0f}", f"bare {bare:,.0f}",
                     f"{paired(runs['engine'], runs['bare']):.2f}x", case.target))
    for case in [c for c in selected_cases(cfg)
                 if c.shape == "uniform" and c.aof and c.predictions and not c.learn]:
        runs = res.drain.get(case.label, {"bare": [], "engine": []})
        engine = median([r.aof_per_tick() for r in runs["engine"]])
        bare = median([r.aof_per_tick() for r in runs["bare"]])
        rows.append((f"AOF bytes per applied tick, {case.label}", f"{engine:,.1f}",
                     f"producer XADD {res.xadd_aof:,.1f}; bare consumer {bare:,.1f}",
                     f"{engine / res.xadd_aof:.2f}x", "≤ 1.5x XADD"))
    if res.recovery:
        replay = [r.replay for r in res.recovery]
        live = [r.live for r in res.recovery]
        rows.append((f"replay after a SIGKILL, {cfg.recovery_entries:,} entries after the "
                     f"snapshot (entries/s)", f"{median([r.rate() for r in replay]):,.0f}",
                     f"live, same entries {median([r.rate() for r in live]):,.0f}",
                     f"{paired(replay, live):.2f}x", "≥ 1.0x"))
        rows.append(("restart to ready after that SIGKILL (s): in process / `tickstream "
                     "serve` exec to /readyz 200",
                     f"{median([r.seconds for r in replay]):.2f} / "
                     f"{median([r.restart_s for r in res.recovery]):.1f}", "", "", ""))
    if res.snapshot:
        sc = res.snapshot
        rows.append((f"snapshot at N={sc[0].tickers:,}, H={UNITS}: write / capture, the "
                     "loop's part (ms)",
                     f"{median([c.write_s for c in sc]) * 1e3:,.0f} / "
                     f"{median([c.capture_s for c in sc]) * 1e3:,.1f}",
                     f"{sc[0].size_bytes / 1e6:,.2f} MB; longest Redis command "
                     f"{median([c.longest_command_s for c in sc]) * 1e3:,.1f} ms", "", ""))
    if res.naive:
        uniform = median([r.rate() for r in res.drain.get("uniform", {}).get("engine", [])])
        naive = median(res.naive)
        rows.append(("naive model.predict per tick (ticks/s)", f"{naive:,.2f}",
                     f"engine uniform {uniform:,.0f}", f"{uniform / naive:,.0f}x", "≥ 5,000x"))
    rows += latency_rows(res)
    if res.http:
        bare = median(res.http["bare"])
        for key, label, target in (("idle", "ingest idle", "≥ 0.8x"),
                                   ("ingesting", f"ingesting {cfg.ingest_rate:,.0f}/s",
                                    "≥ 0.5x")):
            value = median(res.http[key])
            ratio = median([v / b for v, b in zip(res.http[key], res.http["bare"], strict=True)])
            rows.append((f"HTTP GET /v1/predictions/{{t}}, {label} (req/s)", f"{value:,.0f}",
                         f"bare route {bare:,.0f}", f"{ratio:.2f}x", target))
    elif res.http_skipped:
        rows.append(("HTTP", "skipped", res.http_skipped, "", ""))
    for n, mem in sorted(res.rss_kb.items()):
        rows.append((f"RSS after N={n:,} tickers (MiB)", f"{mem.rss / 1024:,.0f}",
                     f"peak {mem.peak / 1024:,.0f}; its own {mem.anon / 1024:,.0f}, mapped "
                     f"files {mem.file / 1024:,.0f}", "",
                     "≤ 700 at N=5,000" if n == 5_000 else ""))
    if res.growth is not None:
        g = res.growth
        rows.append((f"RSS growth over {g.seconds:,.0f}s at {g.rate:,.0f} ticks/s",
                     f"{g.growth_pct:+.1f}%",
                     f"{g.start_kb / 1024:,.0f} -> {g.end_kb / 1024:,.0f} MiB", "", "≤ 5%"))
    lines = ["| figure | median | baseline (same run) | ratio (median of rounds) | target |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    m = res.machine
    head = (f"- Date: {m['date']}; machine: {m['cores']} cores, {m['cpu']}; Python "
            f"{m['python']}; load average at start {m['load']}\n"
            f"- Command: `{m['command']}`; N = {cfg.tickers}, H = {UNITS}, batch "
            f"{cfg.batch_count}, {cfg.rounds} round(s), drain of {cfg.drain_ticks:,} ticks")
    return head + "\n\n" + "\n".join(lines)


def check(res: Results) -> list[str]:
    """What a smoke test requires: every figure produced (drains were checked as they ran)."""
    cfg = res.config
    missing = [f"drain {c.label}" for c in selected_cases(cfg)
               if len(res.drain.get(c.label, {}).get("engine", [])) != cfg.rounds]
    if cfg.only:
        return missing
    missing += ["recovery"] * (len(res.recovery) != cfg.rounds)
    missing += ["snapshot"] * (len(res.snapshot) != cfg.rounds)
    missing += ["naive"] * (len(res.naive) != cfg.rounds)
    missing += ["latency"] * (not res.latency.get("after"))
    missing += ["http"] * (not res.http and res.http_skipped is None)
    missing += [f"rss N={n}" for n in cfg.memory_tickers if n not in res.rss_kb]
    missing += ["growth"] * (res.growth is None)
    return missing
