"""Log lines are one JSON object each, whichever way a caller hands over its fields."""

from __future__ import annotations

import json
import logging
import sys

from wallet_server._logging import JsonFormatter


def formatted(
    message: str, *, fields: dict[str, object] | None = None, error: bool = False
) -> dict[str, object]:
    logger = logging.getLogger("wallet_server.test")
    exc_info = None
    if error:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        message,
        (),
        exc_info,
        extra=None if fields is None else {"fields": fields},
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    assert (parsed["level"], parsed["logger"]) == ("info", "wallet_server.test")
    assert isinstance(parsed["time"], str)
    return parsed


def test_fields_given_as_extra_are_the_line_s_keys() -> None:
    line = formatted("rpc", fields={"event": "rpc", "code": "OK", "latency_ms": 1.5})
    assert (line["event"], line["code"], line["latency_ms"]) == ("rpc", "OK", 1.5)
    assert "message" not in line


def test_a_json_object_message_is_merged_and_plain_text_goes_under_message() -> None:
    assert formatted(json.dumps({"event": "serving", "port": 1}))["port"] == 1
    assert formatted("{not json")["message"] == "{not json"
    assert formatted("plain words")["message"] == "plain words"


def test_an_exception_travels_inside_the_line() -> None:
    line = formatted("failed", error=True)
    assert "ValueError: boom" in str(line["exception"])
