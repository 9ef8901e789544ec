"""The OpenAPI schema as this instance enforces it: auth is declared where it is required.

Routes declare the write key's Bearer scheme statically; without API_KEY the service lets
anyone write, so the schema must not say otherwise (a schema-driven client would expect a
401). With READ_API_KEY, the /v1 reads need a key too and say so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.config import Settings

SCHEME = "HTTPBearer"


def truthful_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        for path, operations in schema["paths"].items():
            for method, op in operations.items():
                if settings.api_key is None:
                    op.pop("security", None)
                elif settings.read_api_key is not None and method == "get" and \
                        path.startswith("/v1/"):
                    op["security"] = [{SCHEME: []}]
        if settings.api_key is None and settings.read_api_key is None:
            schema.get("components", {}).get("securitySchemes", {}).pop(SCHEME, None)
        app.openapi_schema = schema
    return app.openapi_schema
