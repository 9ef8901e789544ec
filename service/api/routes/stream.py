"""Predictions pushed as they are committed: Server-Sent Events from the predictions stream.

One event per committed batch (per predictions-stream entry), its `id` that entry's ID: a
client that reconnects with `Last-Event-ID` resumes right after it and misses nothing the
stream still retains (PREDICTIONS_MAXLEN). Reads Redis, never the model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from service.api.deps import READ_PROBLEMS, RedisBytesDep, SettingsDep, parse_ticker
from service.api.routes.predictions import TICKER_LIST
from service.prediction_stream import stream_predictions

router = APIRouter(tags=["predictions"], responses=READ_PROBLEMS)

BLOCK_MS = 1000  # each wait for new entries; a disconnect is noticed within this
ID_PATTERN = r"^([0-9]{1,20}-[0-9]{1,20})?$"  # empty: not resuming


def event(entry_id: str, fields: dict[bytes, bytes], wanted: set[str] | None) -> str | None:
    """One SSE event for one predictions-stream entry; None if the filter leaves nothing."""
    preds = [p._asdict() for p in stream_predictions([(entry_id.encode(), fields)])
             if wanted is None or p.ticker in wanted]
    if not preds:
        return None
    for p in preds:
        del p["model_version"]
    data = {"id": entry_id, "stream_id": fields[b"stream_id"].decode(),
            "model_version": fields[b"model_version"].decode(), "predictions": preds}
    return f"id: {entry_id}\nevent: batch\ndata: {json.dumps(data)}\n\n"


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
    key = settings.predictions_stream

    async def events() -> AsyncIterator[str]:
        after = last_event_id or "$"
        yield ": tickstream predictions\n\n"
        while not await request.is_disconnected():
            reply = await redis.xread({key: after}, count=100, block=BLOCK_MS)
            for _, entries in reply or ():
                for raw_id, fields in entries:
                    after = raw_id.decode()
                    text = event(after, fields, wanted)
                    if text:
                        yield text
            if not reply:  # a comment: keeps proxies from closing a quiet stream
                yield ": waiting\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})
