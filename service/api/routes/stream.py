"""Predictions pushed as they are committed: Server-Sent Events from the predictions stream.

One event per committed batch (per predictions-stream entry), its `id` that entry's ID: a
client that reconnects with `Last-Event-ID` resumes right after it and misses nothing the
stream still retains (PREDICTIONS_MAXLEN). Reads Redis, never the model. With SHARDS > 1
it follows every shard's predictions stream: an event's `id` is every shard's position
(`0:<entry ID>,1:<entry ID>,...`), so a resume with it is exact too, and its data says
which `shard` the batch is of.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis

from service.api.deps import READ_PROBLEMS, RedisBytesDep, SettingsDep, parse_ticker
from service.api.routes.predictions import TICKER_LIST
from service.prediction_stream import stream_predictions
from service.shards import Routing

router = APIRouter(tags=["predictions"], responses=READ_PROBLEMS)

BLOCK_MS = 1000  # each wait for new entries; a disconnect is noticed within this
PUSH_EVERY_S = 0.1  # a busy stream is pushed in bundles this far apart (events unchanged)
ENTRY_ID = "[0-9]{1,20}-[0-9]{1,20}"
SHARD_AT = f"[0-9]{{1,4}}:{ENTRY_ID}"  # with shards: shard:entry, one per shard
ID_PATTERN = f"^({ENTRY_ID}|{SHARD_AT}(,{SHARD_AT})*)?$"  # empty: not resuming


class EventCache:
    """Each predictions-stream entry decoded and encoded once, whatever the number of
    clients following the stream (10 dashboards cost 10x the decoding otherwise)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._events: OrderedDict[tuple[str, str], tuple[list[dict], str]] = OrderedDict()

    def get(self, stream: str, entry_id: str, fields: dict[bytes, bytes],
            shard: int | None = None) -> tuple[list[dict], str]:
        """(its predictions, its whole event text); by stream and ID, as two shards'
        streams may hand out the same ID."""
        found = self._events.get((stream, entry_id))
        if found is None:
            preds = [p._asdict() for p in stream_predictions([(entry_id.encode(), fields)])]
            for p in preds:
                del p["model_version"]
            found = self._events[stream, entry_id] = (preds,
                                                      _text(entry_id, fields, preds, shard))
            if len(self._events) > self.size:
                self._events.popitem(last=False)
        return found


def _text(entry_id: str, fields: dict[bytes, bytes], preds: list[dict],
          shard: int | None) -> str:
    data = {"id": entry_id, "stream_id": fields[b"stream_id"].decode(),
            "model_version": fields[b"model_version"].decode(), "predictions": preds}
    if shard is not None:
        data["shard"] = shard
    return f"id: {entry_id}\nevent: batch\ndata: {json.dumps(data)}\n\n"


def event(cache: EventCache, stream: str, entry_id: str, fields: dict[bytes, bytes],
          wanted: set[str] | None, shard: int | None = None,
          event_id: str | None = None) -> str | None:
    """One SSE event for one predictions-stream entry; None if the filter leaves nothing.
    `event_id`: the event's `id` when it is not the entry's (with shards)."""
    preds, text = cache.get(stream, entry_id, fields, shard)
    if wanted is not None:
        mine = [p for p in preds if p["ticker"] in wanted]
        if not mine:
            return None
        text = _text(entry_id, fields, mine, shard)
    if event_id is not None:
        text = f"id: {event_id}" + text[text.index("\n"):]
    return text


def _resume(last_event_id: str, keys: list[str]) -> dict[str, str] | None:
    """Where each shard stream resumes: every shard's own position from a sharded event
    ID; from a plain entry ID, every stream after it (by time). None: not resuming."""
    if not last_event_id:
        return None
    if ":" not in last_event_id:
        return dict.fromkeys(keys, last_event_id)
    at = dict(pair.split(":") for pair in last_event_id.split(","))
    return {k: at.get(str(s), "0-0") for s, k in enumerate(keys)}


async def _last_id(redis: Redis, key: str) -> str:
    """The stream's last entry ID now ('0-0' if empty): reading after it waits for new
    entries, like '$', but stays put across non-blocking reads."""
    last = await redis.xrevrange(key, "+", "-", count=1)
    return last[0][0].decode() if last else "0-0"


@router.get("/v1/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "one `batch` event per committed batch"}})
async def stream(
    request: Request, settings: SettingsDep, redis: RedisBytesDep,
    tickers: Annotated[str | None, Query(pattern=TICKER_LIST,
                                         description="only these tickers")] = None,
    last_event_id: Annotated[str, Header(
        pattern=ID_PATTERN, description="resume after this event (its `id`)")] = "",
) -> StreamingResponse:
    """Server-Sent Events: each committed batch's predictions as they are made."""
    wanted = {parse_ticker(t.strip(" ")) for t in tickers.split(",")} if tickers else None
    keys = Routing(settings.predictions_stream, settings.shards).streams()
    shard_of_key = {k: s for s, k in enumerate(keys)} if len(keys) > 1 else {}
    cache = request.app.state.event_cache

    async def events() -> AsyncIterator[str]:
        yield ": tickstream predictions\n\n"
        resume = _resume(last_event_id, keys)
        after = resume or {k: await _last_id(redis, k) for k in keys}
        while not await request.is_disconnected():
            if len(keys) == 1:  # one stream: wait in Redis for its next entries
                reply = await redis.xread(after, count=1000, block=BLOCK_MS)
            else:  # one read per shard stream (on Redis Cluster each is on its own node)
                replies = await asyncio.gather(*(redis.xread({k: a}, count=1000)
                                                 for k, a in after.items()))
                reply = [r for part in replies for r in (part or ())]
            texts = []
            for key, entries in reply or ():
                stream = key.decode()
                shard = shard_of_key.get(stream)
                for raw_id, fields in entries:
                    after[stream] = entry_id = raw_id.decode()
                    # with shards, the event's id holds every shard's position: a client
                    # resuming with it misses nothing and gets nothing twice
                    event_id = None if shard is None else ",".join(
                        f"{s}:{after[k]}" for k, s in shard_of_key.items())
                    texts.append(event(cache, stream, entry_id, fields, wanted, shard,
                                       event_id))
            # one write for all the events read; a comment keeps proxies from closing a
            # quiet stream
            yield "".join(filter(None, texts)) if reply else ": waiting\n\n"
            if reply or len(keys) > 1:  # let batches gather: a read per PUSH_EVERY_S
                await asyncio.sleep(PUSH_EVERY_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})
