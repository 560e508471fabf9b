"""Classify database errors without letting driver types escape this package."""

from __future__ import annotations

import psycopg.errors
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


class KeysChangedMeanwhile(Exception):
    """Idempotency keys a transaction read changed before it used them: one it read as
    unused was stored by a concurrent transaction (run again, it replays that key's
    outcome), or one it needs was purged (run again, it sees the purge whole)."""


def is_retryable_conflict(exc: BaseException) -> bool:
    """A serialization failure, a deadlock or keys changed meanwhile: the whole transaction
    may simply run again.

    The database's own come in two forms, both counted: wrapped by the SQL toolkit, or
    raised by the driver itself on the hot paths that use the driver connection directly."""
    return isinstance(exc, (*_RETRYABLE, KeysChangedMeanwhile)) or (
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
