"""The shards: which engine runs each, how far its outputs are, its lag and tickers."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import READ_PROBLEMS, EngineDep

router = APIRouter(prefix="/v1/shards", tags=["shards"], responses=READ_PROBLEMS)


class ShardOut(BaseModel):
    shard: int
    stream: str = Field(description="its tick stream: producers append its tickers' ticks here")
    owner: str | None = Field(description="host:pid of the engine holding its lease (null: "
                              "none right now, e.g. between a death and the takeover)")
    here: bool = Field(description="run by the engine answering this request")
    cursor: str | None = Field(description="last tick entry whose outputs are written")
    lag: int | None = Field(description="entries not yet applied: exact for a shard run "
                            "here; for others, as of its owner's last snapshot")
    tickers: int | None = Field(description="tickers it holds (for a shard run elsewhere: "
                                "those with a latest prediction)")
    ready: bool | None = Field(description="caught up (null: run by another engine)")


class Shards(BaseModel):
    shards: list[ShardOut]
    engines: int | None = Field(description="live engines of this deployment (null when "
                                "SHARDS = 1: a second engine only stands by)")


@router.get("", response_model=Shards)
def shards(engine: EngineDep) -> Shards:
    """Every shard and the engine that runs it (one shard when SHARDS = 1)."""
    # a sync route, run in a thread: a few Redis reads per shard
    return Shards(shards=[ShardOut(**s) for s in engine.shards()], engines=engine.engines_live())
