"""The ticker -> row registry, and resetting one row's memory."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from service.api.deps import (
    AGE,
    READ_PROBLEMS,
    TOO_LARGE,
    UNAUTHORIZED,
    EngineDep,
    SnapshotDep,
    TickerPath,
    WriteAccess,
    problem,
    snapshot_age,
)

router = APIRouter(prefix="/v1/tickers", tags=["tickers"], responses=READ_PROBLEMS)


class Tickers(BaseModel):
    tickers: dict[str, int] = Field(description="ticker -> its batch row")
    count: int
    capacity: int = Field(description="batch rows the model has now (grows by doubling)")
    max_tickers: int = Field(description="beyond this, new tickers' ticks are dead-lettered")
    snapshot_age_s: float = Field(description=AGE)


class Reset(BaseModel):
    ticker: str
    row: int | None = Field(description="its batch row (null: its shard is run by another "
                            "engine, which applied the reset)")
    reset: bool = Field(description="the row's h and c were zeroed, by a control entry "
                       "in the tick stream that the loop has applied")


@router.get("", response_model=Tickers)
async def list_tickers(engine: EngineDep, snapshot: SnapshotDep) -> Tickers:
    """Every known ticker and the batch row it owns."""
    rows = engine.tickers()
    return Tickers(tickers=rows, count=len(rows), capacity=engine.capacity,
                   max_tickers=engine.max_tickers, snapshot_age_s=snapshot_age(snapshot))


@router.post("/{ticker}/reset", response_model=Reset, dependencies=[WriteAccess],
             responses={**UNAUTHORIZED, **TOO_LARGE, 404: problem("unknown ticker"),
                        503: problem("the reset is queued in the stream, not yet applied")})
def reset_ticker(ticker: TickerPath, engine: EngineDep) -> Reset:
    """Zero one ticker's LSTM state (h and c); its steps and last tick are kept."""
    # A sync route (run in a thread): it waits for the ingest loop to commit the reset.
    row = engine.tickers().get(ticker)
    try:
        done = engine.reset_ticker(ticker)
    except TimeoutError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the reset is in the tick stream but the ingest loop has not "
                            "applied it in time; it will be applied once the loop gets there "
                            "(GET /readyz says why it is behind)") from None
    if not done:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"unknown ticker {ticker!r}: GET /v1/tickers lists the known ones")
    return Reset(ticker=ticker, row=row, reset=True)
