"""Persistence on PostgreSQL: tables, migrations, repositories. SQL stops here."""

from wallet_server.storage._cancellation import is_being_cancelled, raise_if_cancelling
from wallet_server.storage._driver import (
    Driver,
    WritesAtCommit,
    driver_of,
    hold_writes,
    roll_back_if_open,
    savepoint,
)
from wallet_server.storage._engine import (
    connection_limit,
    connections_per_process,
    create_engine,
    migrate,
    schema_is_current,
    sqlalchemy_url,
)
from wallet_server.storage._errors import (
    KeysChangedMeanwhile,
    is_retryable_conflict,
    is_unavailable,
)
from wallet_server.storage._notifications import OUTBOX_CHANNEL, libpq_url, listen_forever
from wallet_server.storage._tables import metadata

__all__ = [
    "OUTBOX_CHANNEL",
    "Driver",
    "KeysChangedMeanwhile",
    "WritesAtCommit",
    "connection_limit",
    "connections_per_process",
    "create_engine",
    "driver_of",
    "hold_writes",
    "is_being_cancelled",
    "is_retryable_conflict",
    "is_unavailable",
    "libpq_url",
    "listen_forever",
    "metadata",
    "migrate",
    "raise_if_cancelling",
    "roll_back_if_open",
    "savepoint",
    "schema_is_current",
    "sqlalchemy_url",
]
