"""Ticks in over HTTP: validated by the stream's own rules, then appended to the stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, Strict

from models.ticks import MAX_PRICE, MAX_TS_MS, MIN_PRICE, TICKER_INPUT
from service.api.deps import (
    PROBLEMS,
    TOO_LARGE,
    UNAUTHORIZED,
    RedisDep,
    SettingsDep,
    WriteAccess,
    problem,
)
from service.shards import Routing
from service.types import Fields

router = APIRouter(prefix="/v1/ticks", tags=["ticks"], responses=PROBLEMS)

MAX_TICKS_PER_REQUEST = 10_000  # one request must not hold the event loop for long
# JSON numbers only (no "1.5" strings, no booleans), finite, within the stream's bounds:
# constraints that validate and document alike (GET /openapi.json states them)
Price = Annotated[float, Strict(), Field(ge=MIN_PRICE, le=MAX_PRICE, allow_inf_nan=False)]
Volume = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]


def _whole_float_as_int(value: object) -> object:
    """JSON Schema's integer includes 1.0 and 1e12: take them as the ints they are."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


TsMs = Annotated[int, Strict(), Field(ge=0, le=MAX_TS_MS),
                 BeforeValidator(_whole_float_as_int)]


class TickIn(BaseModel):
    """A tick as JSON; the rules are models/ticks.py's, so HTTP and stream refuse alike."""

    ticker: Annotated[str, Strict(), AfterValidator(str.upper)] = Field(
        pattern=TICKER_INPUT, description="1-16 chars of A-Z a-z 0-9 . _ -, case-folded to upper")
    price: Price = Field(description=f"within [{MIN_PRICE:g}, {MAX_PRICE:g}]")
    volume: Volume = Field(0.0, description="finite, >= 0")
    ts: TsMs | None = Field(
        None, description="whole epoch milliseconds before the year 3000; default: the "
        "stream ID's time")

    def fields(self) -> Fields:
        """The stream entry; `repr` round-trips a float exactly."""
        out = {"ticker": self.ticker, "price": repr(self.price), "volume": repr(self.volume)}
        if self.ts is not None:
            out["ts"] = str(self.ts)
        return out


def _as_list(body: object) -> object:
    return [body] if isinstance(body, dict) else body


TickBody = Annotated[
    list[TickIn],
    BeforeValidator(_as_list, json_schema_input_type=TickIn | list[TickIn]),
    Field(min_length=1, max_length=MAX_TICKS_PER_REQUEST),
    Body(description="one tick, or a list of ticks"),
]


class Appended(BaseModel):
    ids: list[str] = Field(description="stream IDs of the appended entries, in body order")


@router.post("", status_code=status.HTTP_202_ACCEPTED, dependencies=[WriteAccess],
             responses={**UNAUTHORIZED, **TOO_LARGE,
                        503: problem("Redis unreachable or refusing writes: nothing was "
                                     "written")})
async def post_ticks(ticks: TickBody, settings: SettingsDep, redis: RedisDep) -> Appended:
    """Append ticks to the stream (with SHARDS > 1: each to its ticker's shard stream);
    the ingest loop applies them shortly after."""
    ids: list[str] = [""] * len(ticks)
    routing = Routing(settings.stream, settings.shards)
    for stream, where in routing.split(t.ticker for t in ticks).items():
        async with redis.pipeline(transaction=True) as pipe:  # all of a stream's or none
            for i in where:
                pipe.xadd(stream, ticks[i].fields())
            for i, entry_id in zip(where, await pipe.execute(), strict=True):
                ids[i] = entry_id
    return Appended(ids=ids)
