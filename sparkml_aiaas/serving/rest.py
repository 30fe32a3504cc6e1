"""HTTP plumbing shared by REST v1 and v2: authentication, bodies, errors, JSON responses.

Every error is ``{"error": "<one line>", "request_id": "..."}`` with its status
(see docs/serving.md for the table shared with gRPC).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Optional

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from sparkml_aiaas.serving.middleware import error_response
from sparkml_aiaas.serving.oip import ModelUnavailable
from sparkml_aiaas.serving.security import AuthError, Gate
from sparkml_aiaas.serving.tokens import TokenRecord
from sparkml_aiaas.serving.validation import error_path

__all__ = ["ERROR_RESPONSES", "ErrorBody", "ORJSONResponse", "install_error_handlers",
           "read_body", "requirement", "unavailable"]


class ErrorBody(BaseModel):
    error: str
    request_id: str


ERROR_RESPONSES = {code: {"model": ErrorBody}
                   for code in (401, 403, 404, 413, 422, 429, 500, 503)}

#: AuthError kind -> HTTP status.
AUTH_STATUS = {"unauthenticated": 401, "permission_denied": 403, "rate_limited": 429}


class ORJSONResponse(Response):
    """JSON by orjson: numpy arrays serialized natively, NaN and infinities as null."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or uuid.uuid4().hex[:16]


def install_error_handlers(app: FastAPI) -> None:
    """Every HTTPException and request validation error as the one error body."""

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), request_id(request),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = error_path(first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}",
                              request_id(request))


_BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="a token from `sparkml-aiaas tokens create`")


def auth_http_error(error: AuthError) -> HTTPException:
    headers = None
    if error.kind == "unauthenticated":
        headers = {"WWW-Authenticate": "Bearer"}
    elif error.retry_after is not None:
        headers = {"Retry-After": str(int(error.retry_after))}
    return HTTPException(AUTH_STATUS[error.kind], error.message, headers=headers)


def requirement(gate: Gate, scope: str):
    """A FastAPI dependency: the caller's token record if it may use ``scope``."""

    def dependency(request: Request,
                   credentials: Optional[HTTPAuthorizationCredentials] = Depends(_BEARER)
                   ) -> TokenRecord:
        token = credentials.credentials if credentials is not None else ""
        client = request.client.host if request.client is not None else ""
        try:
            return gate.authorize(token, scope, client)
        except AuthError as exc:
            raise auth_http_error(exc) from None

    return Depends(dependency)


def unavailable(exc: ModelUnavailable) -> HTTPException:
    return HTTPException(exc.status, exc.message)


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body; HTTPException 413 past ``max_body_bytes`` (declared or counted)."""
    declared = request.headers.get("content-length")
    # ASCII digits only ("²".isdigit() is True; int() of 5000 digits raises).
    if declared is not None and re.fullmatch(r"[0-9]{1,30}", declared) and \
            int(declared) > max_body_bytes:
        raise HTTPException(413, f"request body is {int(declared)} bytes; the limit is "
                                 f"{max_body_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise HTTPException(413, f"request body exceeds the limit of {max_body_bytes} "
                                     "bytes")
        chunks.append(chunk)
    return b"".join(chunks)
