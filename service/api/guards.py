"""Guards in front of every route, as plain ASGI (no per-request cost when unused).

`BodyLimit`: a body larger than MAX_BODY_BYTES is refused with 413 before it is read whole
(by its Content-Length, or as soon as a chunked body passes the limit). `ReadKey`: with
READ_API_KEY set, the /v1 reads need a Bearer key too (the read or the write key).
"""

from __future__ import annotations

import json
import secrets

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


async def _problem(send: Send, code: int, detail: str, *extra: tuple[bytes, bytes]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)), *extra]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self, size: str) -> str:
        return (f"request body of {size} bytes is larger than the limit of {self.max_bytes} "
                "(TICKSTREAM_MAX_BODY_BYTES); send fewer ticks per request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _problem(send, status.HTTP_413_CONTENT_TOO_LARGE,
                           self.too_large(declared.decode()), (b"connection", b"close"))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # FastAPI re-raises an HTTPException from here
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                    self.too_large(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, limited, send)


class ReadKey:
    """Bearer auth on GET /v1/...; health, metrics and docs stay open."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and \
                scope["path"].startswith("/v1/"):
            auth = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            ok = scheme.lower() == b"bearer" and any(
                secrets.compare_digest(given, k) for k in self.keys)
            if not ok:
                await _problem(send, status.HTTP_401_UNAUTHORIZED,
                               ("wrong" if auth else "missing") + " API key: reads need the "
                               "header 'Authorization: Bearer <key>' (TICKSTREAM_READ_API_KEY)",
                               (b"www-authenticate", b"Bearer"))
                return
        await self.app(scope, receive, send)
