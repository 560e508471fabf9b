"""Classify database errors without letting driver types escape this package."""

from __future__ import annotations

import psycopg.errors
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


class KeyTakenMeanwhile(Exception):
    """A transaction that read its idempotency keys as unused and stores them when it is
    done found one stored by a concurrent transaction in between. Run again, it replays
    that key's outcome."""


def is_retryable_conflict(exc: BaseException) -> bool:
    """A serialization failure, a deadlock or a key taken meanwhile: the whole transaction
    may simply run again.

    The database's own come in two forms, both counted: wrapped by the SQL toolkit, or
    raised by the driver itself on the hot paths that use the driver connection directly."""
    return isinstance(exc, (*_RETRYABLE, KeyTakenMeanwhile)) or (
        isinstance(exc, DBAPIError) and isinstance(exc.orig, _RETRYABLE)
    )


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached (connection refused or lost, server shutting down)."""
    if isinstance(exc, OSError | ConnectionError | PoolTimeout):
        return True
    if is_retryable_conflict(exc):
        return False
    if isinstance(exc, InterfaceError | OperationalError):
        return True
    if isinstance(exc, psycopg.InterfaceError | psycopg.OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
