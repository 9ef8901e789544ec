"""The HTTP baseline: one FastAPI route answering a constant prediction, under the same
uvicorn setup as `tickstream serve` (access log off), so requests/s compare the service's
route with the framework's own cost. Run: `python -m bench.bare_app` (port from TICKSTREAM_PORT)."""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI

BODY = {"ticker": "T00001", "prediction": 0.000123, "predicted_price": 101.5,
        "last_price": 101.49, "as_of": 1767225600000, "stream_id": "1767225600000-0",
        "steps": 42, "model_version": "0123456789abcdef", "snapshot_age_s": 0.01}

app = FastAPI()


@app.get("/v1/predictions/{ticker}")
async def prediction(ticker: str) -> dict:
    return BODY


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["TICKSTREAM_PORT"]),
                access_log=False)  # as `tickstream serve` runs by default
