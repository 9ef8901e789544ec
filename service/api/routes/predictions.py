"""Latest predictions, straight from the published snapshot (never from the model)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from models.ticks import TICKER_INPUT
from service.api.deps import (
    AGE,
    READ_PROBLEMS,
    RedisBytesDep,
    SettingsDep,
    SnapshotDep,
    TickerPath,
    parse_ticker,
    problem,
    snapshot_age,
)
from service.api.remote import remote_prediction, remote_predictions
from service.prediction_stream import stream_predictions
from service.records import parse_id
from service.sharded import AnyEngine, ShardedEngine
from service.shards import Routing, shard_of
from service.snapshot import Prediction, Snapshot
from service.types import Cursor

router = APIRouter(prefix="/v1/predictions", tags=["predictions"], responses=READ_PROBLEMS)
ONE = TICKER_INPUT[1:-1]
TICKER_LIST = f"^ *{ONE}( *, *{ONE})* *$"  # "A,b.c, D-1": spaces around commas allowed


class PredictionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ticker: str
    prediction: float = Field(description="predicted next log return")
    predicted_price: float = Field(description="last_price * exp(prediction)")
    last_price: float
    as_of: int = Field(description="ts of the last applied tick, epoch ms")
    stream_id: str = Field(description="stream ID of the last applied tick")
    steps: int = Field(description="ticks applied to this ticker's row")
    model_version: str
    skill: float | None = Field(description="the ticker's live skill, 1 - MSE_model / "
                                "MSE_zero, exponentially weighted (GET /v1/quality has the "
                                "rest); null until one of its predictions was scored")


class OnePrediction(PredictionOut):
    snapshot_age_s: float = Field(description=AGE + "; for a ticker whose shard another "
                                  "engine runs, seconds since that shard's newest written "
                                  "output's tick entered the stream")
    served_from: Literal["memory", "redis"] | None = Field(
        None, description="with SHARDS > 1 only: this engine's memory, or the "
        "latest-prediction records of a shard another engine runs")


class AllPredictions(BaseModel):
    predictions: dict[str, PredictionOut]
    unknown: list[str] = Field(description="requested tickers with no prediction yet")
    stream_id: str | None = Field(description="last stream entry the snapshot includes "
                                  "(null with SHARDS > 1: each shard has its own stream)")
    snapshot_age_s: float = Field(description=AGE + "; with SHARDS > 1, the stalest of the "
                                  "shards read")


def _json_number(value: float | None) -> str:
    return "null" if value is None else repr(value)


def _by_shard(engine: ShardedEngine, tickers: list[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for t in tickers:
        out.setdefault(shard_of(t, engine.count), []).append(t)
    return out


@router.get("", response_model=AllPredictions)
async def all_predictions(
    request: Request,
    snapshot: SnapshotDep,
    redis: RedisBytesDep,
    tickers: Annotated[str | None, Query(pattern=TICKER_LIST,
                                         description="comma list, e.g. AAPL,msft")] = None,
) -> Response:
    """Every ticker's latest prediction, or only those in `tickers`."""
    wanted = [parse_ticker(t.strip(" ")) for t in tickers.split(",")] if tickers else None
    engine = request.app.state.engine
    preds: Mapping[str, Prediction] = snapshot.predictions
    age = snapshot_age(snapshot)
    if isinstance(engine, ShardedEngine):  # the shards other engines run, from Redis
        by_shard = None if wanted is None else _by_shard(engine, wanted)
        found, remote_age = await remote_predictions(redis, engine.remotes(), by_shard)
        preds, age = {**preds, **found}, max(age, remote_age or 0.0)
    names = preds.keys() if wanted is None else [t for t in wanted if t in preds]
    skill = engine.skills()
    # Prediction.to_json is ~20x cheaper than a pydantic model per ticker: with 10,000
    # tickers that is ~10 ms instead of ~130 ms holding the event loop.
    body = ", ".join(
        f'"{t}": {preds[t].to_json()[:-1]}, "skill": {_json_number(skill(t))}}}'
        for t in names)
    tail = json.dumps({"unknown": [t for t in wanted or () if t not in preds],
                       "stream_id": snapshot.stream_id, "snapshot_age_s": age})
    return Response(f'{{"predictions": {{{body}}}, {tail[1:]}', media_type="application/json")


class HistoryPoint(BaseModel):
    prediction: float = Field(description="predicted next log return")
    predicted_price: float
    last_price: float
    as_of: int = Field(description="the tick's ts, epoch ms")
    stream_id: str = Field(description="stream ID of the tick")
    steps: int


class History(BaseModel):
    ticker: str
    history: list[HistoryPoint] = Field(description="oldest first, newest last")


HISTORY_PAGE = 100  # predictions-stream entries (batches) per XREVRANGE


@router.get("/{ticker}/history", response_model=History)
async def history(
    ticker: TickerPath, settings: SettingsDep, redis: RedisBytesDep,
    limit: Annotated[int, Query(ge=1, le=5000, description="at most this many")] = 200,
) -> History:
    """A ticker's latest predictions, from the predictions stream (as far back as it is
    retained: PREDICTIONS_MAXLEN); empty for a ticker it does not hold."""
    found: list[Prediction] = []
    end, name = "+", ticker.encode()
    stream = Routing(settings.predictions_stream, settings.shards).stream_of(ticker)
    while len(found) < limit:
        page = await redis.xrevrange(stream, end, "-", count=HISTORY_PAGE)
        for entry_id, fields in page:
            if name in fields.get(b"ticker", b"").split():  # skip other batches undecoded
                mine = [p for p in stream_predictions([(entry_id, fields)]) if p.ticker == ticker]
                found += reversed(mine)
        if len(page) < HISTORY_PAGE:
            break
        end = "(" + page[-1][0].decode()
    points = [HistoryPoint(**p._asdict()) for p in reversed(found[:limit])]
    return History(ticker=ticker, history=points)


# The path parameter, documented by hand: the route reads it itself (see one_prediction).
TICKER_PARAMETER: dict[str, object] = {
    "in": "path", "name": "ticker", "required": True, "description": "any case",
    "schema": {"title": "Ticker", "type": "string", "pattern": TICKER_INPUT}}
STREAM_ID_INPUT = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
WAIT_DEFAULT_S, WAIT_MAX_S = 1.0, 5.0
AFTER_PARAMETERS: list[dict[str, object]] = [
    {"in": "query", "name": "after", "required": False,
     "description": "a stream ID (e.g. the one XADD returned for your tick): answer once "
     "the engine has served every entry up to it, at most `wait` seconds from now; the "
     "answer's `stream_id` then says whether that tick was applied",
     "schema": {"title": "After", "type": "string", "pattern": STREAM_ID_INPUT}},
    {"in": "query", "name": "wait", "required": False,
     "description": "with `after`: the longest wait in seconds; past it the answer is "
     "what is served then",
     "schema": {"title": "Wait", "type": "number", "minimum": 0, "maximum": WAIT_MAX_S,
                "default": WAIT_DEFAULT_S}},
]
_STREAM_ID = re.compile(STREAM_ID_INPUT)
_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


def _after(request: Request) -> tuple[tuple[int, int], float] | None:
    """`after` as a position and `wait` in seconds; None without `after`; 422 if either
    is wrong (`wait` also without `after`: the schema states its range either way)."""
    query = request.query_params
    after, raw_wait = query.get("after"), query.get("wait")
    if raw_wait is None:
        wait = WAIT_DEFAULT_S
    else:  # a JSON number, as the schema says: not float()'s "nan", " 1", "0_1"
        wait = float(raw_wait) if _JSON_NUMBER.match(raw_wait) else math.nan
    if not 0 <= wait <= WAIT_MAX_S:  # NaN fails too
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"wait {raw_wait[:40]!r} must be seconds from 0 to "
                            f"{WAIT_MAX_S:g}")
    if after is None:
        return None
    if not _STREAM_ID.fullmatch(after):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"after {after[:40]!r} must be a stream ID: ms or ms-seq")
    return parse_id(after), wait


async def _wait_served(request: Request, engine: AnyEngine, ticker: str,
                       cursor: Cursor, wait: float) -> None:
    """Until the ticker's shard has served entry `cursor` (or `wait` seconds pass); if this
    engine hands the shard over meanwhile, until the new owner has written it."""
    deadline = time.monotonic() + wait
    waits = engine.served_of(ticker)
    if waits is not None and (await waits.until(cursor, wait)
                              or engine.served_of(ticker) is not None):
        return  # served, or timed out, or standing by: what is served here answers
    # another engine runs its shard: its written outputs are what is served here
    assert isinstance(engine, ShardedEngine)
    await request.app.state.remote_waits.until(engine.remote(ticker), cursor,
                                               max(0.0, deadline - time.monotonic()))


@router.get("/{ticker}", response_model=OnePrediction,
            responses={404: problem("no tick of this ticker applied yet")},
            openapi_extra={"parameters": [TICKER_PARAMETER, *AFTER_PARAMETERS]})
async def one_prediction(request: Request) -> Response:
    """One ticker's latest prediction (404 until a tick of it has been applied). With
    `after`, once the engine has served that stream entry: read-your-writes, no polling."""
    # The hot read: no dependencies, no declared parameters. FastAPI resolving them cost
    # ~80 us a request, a fifth of this route's requests/s against a bare constant route.
    ticker = parse_ticker(request.path_params["ticker"])
    engine = request.app.state.engine
    if request.scope["query_string"] and (after := _after(request)) is not None:
        await _wait_served(request, engine, ticker, *after)
    snapshot: Snapshot | None = engine.snapshot_of(ticker)
    served, age = "", 0.0
    if snapshot is None:  # another engine runs its shard: its records in Redis
        p, remote_age = await remote_prediction(request.app.state.redis_bytes,
                                                engine.remote(ticker), ticker)
        served, age = ', "served_from": "redis"', remote_age or 0.0
    else:
        p, age = snapshot.predictions.get(ticker), snapshot_age(snapshot)
        if isinstance(engine, ShardedEngine):
            served = ', "served_from": "memory"'
    if p is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no prediction for {ticker!r}: no tick of it has been applied yet. "
            "Send ticks with POST /v1/ticks; GET /v1/tickers lists the known tickers",
        )
    # the prediction as JSON (formatted by hand: see Prediction.to_json), plus the age
    quality = engine.quality(ticker)
    skill = _json_number(None if quality is None else quality.skill)
    body = f'{p.to_json()[:-1]}, "skill": {skill}, "snapshot_age_s": {age!r}{served}}}'
    return Response(body, media_type="application/json")
