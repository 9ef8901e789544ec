"""The FastAPI app: routers per resource, and a lifespan that owns the ingest engine."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from models.artifact import Artifact, load_artifact
from service import topology
from service.api.guards import BodyLimit, ReadKey
from service.api.openapi import truthful_openapi
from service.api.remote import RemoteWaits
from service.api.routes import (
    dashboard,
    health,
    model,
    predictions,
    shards,
    stream,
    tickers,
    ticks,
)
from service.api.timing import RequestTimer
from service.config import Settings
from service.ingest import Engine
from service.metrics import EngineCollector, app_registry, request_histogram
from service.redis_io import write_refusal
from service.sharded import AnyEngine, ShardedEngine, check_topology

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, Artifact, str], Engine]


def create_app(
    settings: Settings, artifact: Artifact | None = None, engine_factory: EngineFactory = Engine
) -> FastAPI:
    """The app for `settings` (Redis URL required); the model is `artifact` or `model_dir`."""
    redis_url = settings.redis_url
    if redis_url is None:
        raise ValueError("settings.redis_url is required: `tickstream serve` starts an "
                         "embedded Redis and fills it in when none is configured")
    if artifact is None and settings.model_dir is None:
        raise ValueError("give an artifact or settings.model_dir")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cluster = topology.is_cluster(redis_url)
        check_topology(settings, cluster)
        model = artifact or load_artifact(settings.model_dir)
        engine: AnyEngine = (ShardedEngine(settings, model, redis_url, cluster)
                             if settings.shards > 1 else engine_factory(settings, model, redis_url))
        engine.start()
        app.state.engine = engine
        metrics.register(EngineCollector(engine))
        app.state.metrics = metrics
        # No automatic retries (topology.async_client): a resent XADD whose reply was lost
        # would append it twice.
        options = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
        app.state.redis = topology.async_client(redis_url, cluster, decode_responses=True,
                                                **options)
        # the predictions stream's columns are binary
        app.state.redis_bytes = topology.async_client(redis_url, cluster, **options)
        app.state.remote_waits = RemoteWaits(app.state.redis_bytes)  # ?after=, other shards
        try:
            yield
        finally:
            await app.state.remote_waits.close()
            await app.state.redis.aclose()
            await app.state.redis_bytes.aclose()
            engine.stop()

    app = FastAPI(
        title="tickstream",
        summary="One stateful LSTM, one batch row per ticker, stepped online from a Redis stream.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.event_cache = stream.EventCache()  # /v1/stream: decoded once per entry
    # The hot reads' routes go on the app itself: FastAPI matches an included router's
    # routes through a nested router: ~20 us of a ~105 us GET, measured in-process.
    app.router.routes.extend(predictions.router.routes)
    for module in (ticks, tickers, shards, model, stream, health, dashboard):
        app.include_router(module.router)
    app.mount("/static", dashboard.static_files, name="static")
    metrics = app_registry()
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.read_api_key is not None:
        keys = [k.get_secret_value() for k in (settings.read_api_key, settings.api_key) if k]
        app.add_middleware(ReadKey, keys=keys)
    app.add_middleware(RequestTimer, histogram=request_histogram(metrics))  # outermost
    app.openapi = lambda: truthful_openapi(app, settings)  # type: ignore[method-assign]
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(RedisConnectionError, _redis_unreachable)
    app.add_exception_handler(RedisTimeoutError, _redis_unreachable)
    app.add_exception_handler(ResponseError, _redis_refused)
    app.add_exception_handler(Exception, _internal_error)
    return app


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as {loc, msg}: the place a person can find, e.g. body[0].price."""
    loc, msg = list(error["loc"]), error["msg"].removeprefix("Value error, ")
    if error["type"] == "json_invalid":  # loc[1] is a character offset, not an index
        loc, msg = loc[:1], f"invalid JSON at character {error['loc'][1]}: {msg}"
    return {"loc": loc, "msg": msg}


def _where(loc: list[str | int]) -> str:
    return str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable line per problem (and never the offending input echoed back)."""
    assert isinstance(exc, RequestValidationError)
    errors = [_problem(e) for e in exc.errors()]
    detail = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _redis_unreachable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"Redis is unreachable ({exc}); nothing was written. Retry once "
                   "GET /readyz answers 200"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


async def _redis_refused(request: Request, exc: Exception) -> JSONResponse:
    """Redis answered with an error: 503 when it refuses writes (maxmemory, failed AOF)."""
    refusal = write_refusal(exc)
    if refusal is None:
        return await _internal_error(request, exc)
    return JSONResponse(
        {"detail": f"Redis refuses writes ({refusal}); nothing was written. Retry once "
                   "GET /readyz answers 200"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the service log has the details"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
