"""The ASGI middleware around every HTTP request: request ids, metrics, the access log,
and a 500 without a traceback for an unexpected error."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi.responses import JSONResponse

from sparkml_aiaas.serving.logs import ACCESS_LOGGER, access_line, request_target
from sparkml_aiaas.serving.metrics import Metrics

__all__ = ["Guard", "error_response"]

logger = logging.getLogger("sparkml_aiaas.serving")
access_logger = logging.getLogger(ACCESS_LOGGER)


def error_response(status: int, message: str, request_id: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status,
                        headers=headers)


class Guard:
    """Pure ASGI middleware: request ids, metrics, and a 500 without a traceback."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - logged with traceback, never sent to the client
            logger.exception("internal error in %s %s (request_id %s)", scope.get("method"),
                             request_target(scope), request_id)
            status["code"] = 500
            if not status["sent"]:
                await error_response(500, "internal error", request_id)(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, scope.get("method", ""),
                                         str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            if status["code"] >= 500:
                self.metrics.errors.labels(endpoint).inc()
            # uvicorn's access log is off under `serve` (it would log query strings).
            access_logger.info("%s", access_line(scope, status["code"], elapsed, request_id))
