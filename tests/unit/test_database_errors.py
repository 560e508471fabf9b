"""Database errors are classified alike whether the SQL toolkit wrapped them or not."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import OperationalError

from wallet_server.storage import is_retryable_conflict, is_unavailable


def wrapped(exc: Exception) -> OperationalError:
    return OperationalError("statement", {}, exc)


@pytest.mark.parametrize(
    "exc", [psycopg.errors.DeadlockDetected(), psycopg.errors.SerializationFailure()]
)
def test_conflicts_are_retryable_raw_or_wrapped(exc: Exception) -> None:
    assert is_retryable_conflict(exc)
    assert is_retryable_conflict(wrapped(exc))
    assert not is_unavailable(exc)
    assert not is_unavailable(wrapped(exc))


def test_a_lost_connection_is_unavailable_raw_or_wrapped() -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert is_unavailable(lost)
    assert is_unavailable(wrapped(lost))
    assert not is_retryable_conflict(lost)


def test_a_constraint_violation_is_neither() -> None:
    exc = psycopg.errors.UniqueViolation()
    assert not is_retryable_conflict(exc)
    assert not is_unavailable(exc)
