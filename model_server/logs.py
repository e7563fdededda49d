"""Structured logs: one JSON object per line with ts, level, msg and fields.

Call sites use the standard library and pass fields through ``extra``::

    log.info("listening", extra=kv(port=9090))

Only the values given as fields are written, so nothing from the environment (credentials,
tokens) can reach a log line unless a call site puts it there.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

LEVELS = ("debug", "info", "warning", "error")


def kv(**fields: Any) -> dict[str, Any]:
    """The ``extra`` argument that attaches fields to a log line."""
    return {"fields": fields}


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
            "pid": record.process or os.getpid(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry["fields"] = fields
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # default=str: a field of an unexpected type is still logged rather than lost.
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every log record of this process to ``stream`` (stderr) as JSON lines."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
