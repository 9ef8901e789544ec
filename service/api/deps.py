"""What routes depend on, as `Annotated` aliases so route signatures read like prose.

Dependencies are `async def`: they only read app state, and a plain `def` would make
FastAPI hop to a worker thread for each (measured: about half of a GET's time).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from models.ticks import TICKER_INPUT
from service.config import Settings
from service.sharded import AnyEngine
from service.snapshot import Snapshot


class Problem(BaseModel):
    """Every error body: `detail` is meant for a person; `errors` lists each bad field."""

    detail: str
    errors: list[dict[str, object]] | None = None


def problem(description: str) -> dict[str, object]:
    """An OpenAPI `responses` entry for an error status."""
    return {"model": Problem, "description": description}


PROBLEMS: dict[int | str, dict[str, object]] = {
    422: problem("invalid input; `detail` says what and where"),
}
READ_PROBLEMS: dict[int | str, dict[str, object]] = {
    **PROBLEMS, 401: problem("missing or wrong API key (only when READ_API_KEY is set)"),
}
TOO_LARGE: dict[int | str, dict[str, object]] = {
    413: problem("request body larger than MAX_BODY_BYTES"),
}


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> AnyEngine:
    return request.app.state.engine


async def get_snapshot(engine: Annotated[AnyEngine, Depends(get_engine)]) -> Snapshot:
    """Read the published snapshot once, so one response never mixes two snapshots."""
    return engine.snapshot


async def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


async def get_redis_bytes(request: Request) -> aioredis.Redis:
    """Bytes in, bytes out: for the predictions stream's binary columns."""
    return request.app.state.redis_bytes


_TICKER_INPUT = re.compile(TICKER_INPUT.replace("$", r"\Z"))  # no trailing newline


def parse_ticker(ticker: str) -> str:
    """A ticker as the stream stores it (case-folded), or 422 saying what is wrong: exactly
    the OpenAPI pattern TICKER_INPUT."""
    if not _TICKER_INPUT.match(ticker):
        shown = ticker if len(ticker) <= 20 else ticker[:20] + "…"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"ticker {shown!r} must be 1-16 chars of A-Z a-z 0-9 . _ -")
    return ticker.upper()


async def ticker_path(
        ticker: Annotated[str, Path(pattern=TICKER_INPUT, description="any case")]) -> str:
    """`parse_ticker` as a path dependency; async, so it runs on the event loop."""
    return parse_ticker(ticker)


AGE = "seconds since the service last confirmed these predictions were current"


def snapshot_age(snapshot: Snapshot) -> float:
    """Seconds since the loop last confirmed `snapshot` was current: how stale a read may
    be. Near 0 on a healthy stream, busy or quiet; it grows when the loop is stuck."""
    return round(max(0.0, time.time() - snapshot.fresh_at), 3)


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AnyEngine, Depends(get_engine)]
SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
RedisBytesDep = Annotated[aioredis.Redis, Depends(get_redis_bytes)]
TickerPath = Annotated[str, Depends(ticker_path)]

_bearer = HTTPBearer(auto_error=False, description="TICKSTREAM_API_KEY, when one is set")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a write unless it carries the configured key (no key configured: allow)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not secrets.compare_digest(given, expected):
        detail = ("wrong API key" if credentials else "missing API key") + (
            ": send the header 'Authorization: Bearer <key>' with the key the service "
            "was started with (TICKSTREAM_API_KEY)"
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
        )


WriteAccess = Depends(require_api_key)
UNAUTHORIZED: dict[int | str, dict[str, object]] = {401: problem("missing or wrong API key")}
