"""Ticks in over HTTP: validated by the stream's own rules, then appended to the stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, Strict

from models.ticks import check_price, check_ts, check_volume, normalize_ticker
from service.api.deps import PROBLEMS, UNAUTHORIZED, RedisDep, SettingsDep, WriteAccess, problem
from service.types import Fields

router = APIRouter(prefix="/v1/ticks", tags=["ticks"], responses=PROBLEMS)

MAX_TICKS_PER_REQUEST = 10_000  # one request must not hold the event loop for long
Number = Annotated[float, Strict()]  # a JSON number: no "1.5" strings, no booleans


class TickIn(BaseModel):
    """A tick as JSON; the rules are models/ticks.py's, so HTTP and stream refuse alike."""

    ticker: Annotated[str, Strict(), AfterValidator(normalize_ticker)] = Field(
        description="1-16 chars of A-Z 0-9 . _ -, case-folded to upper")
    price: Annotated[Number, AfterValidator(check_price)] = Field(description="finite, > 0")
    volume: Annotated[Number, AfterValidator(check_volume)] = Field(
        0.0, description="finite, >= 0")
    ts: Annotated[Number, AfterValidator(check_ts)] | None = Field(
        None, description="epoch ms; default: the stream ID's time")

    def fields(self) -> Fields:
        """The stream entry; `repr` round-trips a float exactly."""
        out = {"ticker": self.ticker, "price": repr(self.price), "volume": repr(self.volume)}
        if self.ts is not None:
            out["ts"] = str(int(self.ts))
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
             responses={**UNAUTHORIZED, 503: problem("Redis unreachable: nothing was written")})
async def post_ticks(ticks: TickBody, settings: SettingsDep, redis: RedisDep) -> Appended:
    """Append ticks to the stream; the ingest loop applies them shortly after."""
    async with redis.pipeline(transaction=True) as pipe:  # all of the body or none
        for tick in ticks:
            pipe.xadd(settings.stream, tick.fields())
        ids = await pipe.execute()
    return Appended(ids=ids)
