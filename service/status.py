"""`tickstream status`: a running service summed up on one screen, from its own HTTP API."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

APPLIED = re.compile(r"^tickstream_ticks_applied_total (\S+)$", re.M)


def _applied(http: httpx.Client) -> float:
    found = APPLIED.search(http.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def _number(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def summary(url: str, headers: dict[str, str], window_s: float = 1.0) -> list[str]:
    """Lines to print; httpx.HTTPError if the service does not answer."""
    with httpx.Client(base_url=url, timeout=5, headers=headers) as http:
        before, t0 = _applied(http), time.perf_counter()
        time.sleep(window_s)
        ready: dict[str, Any] = http.get("/readyz").json()
        rate = (_applied(http) - before) / (time.perf_counter() - t0)
        model: dict[str, Any] = http.get("/v1/model").json()
        overall = http.get("/v1/quality", params={"per_ticker": "false"}).json()["overall"]
    snap = ready.get("snapshot") or {}
    state = "ready" if ready["ready"] else "NOT READY: " + "; ".join(ready["reasons"])
    shards = [] if "shards_here" not in ready else [
        f"  shards        {', '.join(map(str, ready['shards_here'])) or 'none'} run here, "
        f"{ready['engines_live']} engines live (GET /v1/shards has each)"]
    return [
        f"tickstream at {url}: {state}",
        f"  ticks/s       {rate:,.0f} (applied {ready['applied']:,}, "
        f"dead-lettered {sum(ready['dead_lettered'].values()):,})",
        f"  lag           {ready['lag'] if ready['lag'] is not None else 'unknown'} entries",
        f"  tickers       {ready['tickers']:,} of {ready['capacity']:,} rows",
        f"  model         {ready['model_version']}",
        f"  learning      {'on' if model['learning']['on'] else 'off'}, {model['updates']:,} "
        f"updates ({sum(model['skipped'].values())} skipped)",
        f"  skill         {_number(overall['skill'])} (weighted), "
        f"{_number(overall['skill_total'])} since start, over {overall['scored']:,} scored",
        f"  fresh         {ready['snapshot_age_s']:.2f} s ago (last stream entry "
        f"{ready['stream_id']})",
        f"  snapshot      {snap.get('written', 0)} written, last at {snap.get('cursor')} "
        f"({snap.get('age_s')} s ago, {snap.get('size_bytes')} bytes)",
        f"  loop errors   {ready['errors']}",
        *shards,
    ]
