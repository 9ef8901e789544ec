"""Liveness, readiness and metrics: what an orchestrator and a Prometheus scraper poll."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.api.deps import EngineDep, RedisDep, SnapshotDep, snapshot_age

router = APIRouter(tags=["health"])

PING_TIMEOUT_S = 1.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and answering (says nothing about Redis or the stream)."""
    return {"status": "ok"}


async def _redis_problem(redis: Redis) -> str | None:
    try:
        await asyncio.wait_for(redis.ping(), PING_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as e:
        return f"Redis unreachable from the HTTP side ({type(e).__name__}: {e})"
    return None


@router.get("/readyz", responses={503: {"description": "not ready; `reasons` says why"}})
async def readyz(engine: EngineDep, redis: RedisDep, snapshot: SnapshotDep) -> JSONResponse:
    """200 once the model is loaded, Redis answers and the ingest loop has caught up."""
    state = engine.status()
    reasons = [r for r in [await _redis_problem(redis)] if r]
    if not state["connected"]:
        reasons.append(f"ingest loop cannot reach Redis: {state['last_error']}")
    elif state["refusing_writes"]:
        reasons.append(state["refusing_writes"])
    elif state["standby"]:
        reasons.append(state["last_error"])
    elif state["replaying"] is not None:
        reasons.append(state["replaying"]["says"])
    elif not state["current"]:
        lag = "an unknown number of" if state["lag"] is None else state["lag"]
        reasons.append(f"ingest loop catching up: {lag} entries not yet read")
    body: dict[str, Any] = {**state, "ready": not reasons, "reasons": reasons,
                            "snapshot_age_s": snapshot_age(snapshot)}
    code = status.HTTP_503_SERVICE_UNAVAILABLE if reasons else status.HTTP_200_OK
    return JSONResponse(body, status_code=code)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text exposition: ingest counters, lag, staleness, process figures."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
