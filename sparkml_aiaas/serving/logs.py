"""What the server logs, and what it never logs: tokens.

uvicorn's own access log writes each request target with its query string, so a
client that sends its token as ``?token=...`` would have it written in clear.
``serve`` therefore turns that log off (``access_log=False``) and the app writes
its own access line (:func:`access_line`, logger ``sparkml_aiaas.serving.access``):
client, method, the percent-encoded path with any query replaced by
``?<redacted>``, status, milliseconds and request id.  On top of that every
handler of :func:`log_config` formats through :class:`RedactingFormatter`, which
blanks bearer/basic credentials, ``Authorization`` values and ``token=``-style
parameters wherever they appear in a line (tracebacks included): a second line of
defence for messages written by libraries.

:func:`log_config` is the ``logging.config.dictConfig`` dictionary ``serve``
applies and passes to ``uvicorn.run(log_config=...)``.  This module imports
neither FastAPI nor uvicorn.
"""

from __future__ import annotations

import logging
import sys
import re
import urllib.parse
from typing import Any, Dict, Mapping

__all__ = ["ACCESS_LOGGER", "RedactingFormatter", "access_line", "log_config", "redact"]

#: The app's access log (one line per request).
ACCESS_LOGGER = "sparkml_aiaas.serving.access"

REDACTED = "<redacted>"
_SECRETS = (
    # "Bearer abc", "Basic abc" (an Authorization value, in a header dump or a message)
    (re.compile(r"(?i)\b(bearer|basic)(\s+)(?!tokens?\b)[^\s'\",;]+"), r"\1\2" + REDACTED),
    # authorization: abc / "authorization": "abc" / (b'authorization', b'abc')
    (re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*(?:b?['\"])?)"
                r"(?!b?['\"]|(?:bearer|basic)\s|<redacted>)[^\s'\",;]+"), r"\1" + REDACTED),
    # token=abc, access_token=abc, api_key=abc, in a query string or anywhere else
    (re.compile(r"(?i)\b((?:access_|id_|refresh_)?token|api[_-]?key|secret|password)"
                r"=[^&\s'\";]*"), r"\1=" + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``<redacted>`` (see the module doc)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class CurrentStreamHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stdout`` / ``sys.stderr`` is when a record
    is emitted, not the object it was when logging was configured: a stream swapped since
    (a notebook's, a test harness's, later closed) never turns log lines into "I/O
    operation on closed file" tracebacks."""

    def __init__(self, name: str = "stderr"):
        super().__init__()
        self._stream_name = name

    @property
    def stream(self):
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns one; the property decides
        pass


class RedactingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output (message, arguments, traceback) is
    passed through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def request_target(scope: Mapping[str, Any]) -> str:
    """The path of an ASGI request as logged: percent-encoded (no control characters can
    reach a log line), and ``?<redacted>`` for any query string."""
    path = urllib.parse.quote(str(scope.get("root_path", "")) + str(scope.get("path", "")))
    return path + ("?" + REDACTED if scope.get("query_string") else "")


def access_line(scope: Mapping[str, Any], status: int, seconds: float,
                request_id: str) -> str:
    """One access log line: ``client - "GET /path?<redacted> HTTP/1.1" 200 1.2ms id``."""
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "-"
    return (f'{who} - "{scope.get("method", "")} {request_target(scope)} '
            f'HTTP/{scope.get("http_version", "1.1")}" {status} {seconds * 1000:.1f}ms '
            f"{request_id}")


def log_config(quiet: bool = False) -> Dict[str, Any]:
    """The logging configuration of ``serve`` (``logging.config.dictConfig`` format).

    ``sparkml_aiaas`` loggers (access lines included) write bare messages to
    stdout, uvicorn's to stderr with their level; every handler redacts
    (:class:`RedactingFormatter`); uvicorn's access logger has no handler (the
    app writes the access log).  ``quiet``: warnings and errors only.
    """
    level = "WARNING" if quiet else "INFO"
    formatter = f"{__name__}.RedactingFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "message": {"()": formatter, "fmt": "%(message)s"},
            "level": {"()": formatter, "fmt": "%(levelname)s: %(message)s"},
        },
        "handlers": {
            "stdout": {"()": f"{__name__}.CurrentStreamHandler", "formatter": "message",
                       "name": "stdout"},
            "stderr": {"()": f"{__name__}.CurrentStreamHandler", "formatter": "level",
                       "name": "stderr"},
        },
        "loggers": {
            "sparkml_aiaas": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
