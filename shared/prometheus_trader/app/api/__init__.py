"""The HTTP API (SPEC §8): FastAPI under ``/api/v1``, OpenAPI 3 at
``/api/v1/openapi.json`` generated from the pydantic models.

``create_app(deps)`` builds the app over port providers; ``app.api.function`` serves it
from the ``api`` Cloud Function. Every refusal is a 4xx ``{"detail": "..."}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from prometheus_trader.app.api.deps import ApiDeps
from prometheus_trader.app.api.middleware import BodyLimit
from prometheus_trader.app.api.routes import router
from prometheus_trader.usecases.users import Conflict, Invalid, NotFound, UseCaseError

API_PREFIX = "/api/v1"
_STATUS = {NotFound: 404, Conflict: 409, Invalid: 400}


def _field(loc: Sequence[object]) -> str:
    return ".".join(str(p) for p in loc) or "request"


def _validation_errors(exc: RequestValidationError | ValidationError) -> JSONResponse:
    errors = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    summary = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
    return JSONResponse(
        {"detail": f"invalid request: {summary}", "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def create_app(deps: ApiDeps) -> FastAPI:
    """The API over ``deps``."""
    app = FastAPI(
        title="Prometheus API",
        version="1.0.0",
        description="Watchlists, settings, exchange keys, controls and reads of one "
        "trader's account. Bearer tokens; a user token reaches only its own user.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.deps = deps
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_errors(exc)

    @app.exception_handler(UseCaseError)
    async def refused(_: Request, exc: UseCaseError) -> JSONResponse:
        code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            # Allow lists every method of the path (Starlette names only one route's)
            path = request.url.path
            methods = {
                m
                for r in app.routes
                if isinstance(r, APIRoute) and r.path_regex.match(path)
                for m in r.methods or ()
            }
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    app.add_middleware(BodyLimit, max_bytes=deps.max_body_bytes)
    return app


__all__ = ["API_PREFIX", "ApiDeps", "create_app"]
