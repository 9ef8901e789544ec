"""Requests/s with a real load generator (Debian's `wrk`), against a running server."""

from __future__ import annotations

import re
import shutil
import subprocess

WRK_THREADS = 1  # the machine has 2 cores; the server under test needs the rest
WRK_CONNECTIONS = 16


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def requests_per_s(url: str, seconds: float) -> float:
    """Run wrk for `seconds` on `url`; refuse a run with any error or non-2xx answer."""
    out = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(seconds))}s",
         url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))
