"""Engines and connection URLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Imported for its effect: psycopg learns the array parameters before any engine exists.
import wallet_server.storage._arrays  # noqa: F401

_MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """Accept libpq-style URLs and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError("database URL must start with postgresql://")


def create_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        # No overflow: an overflow connection is closed when it comes back to a full pool, so
        # load just above the pool's size opened and closed sessions all the time (about 50
        # in 16 s of 16 payments in flight against a pool of 10, each a new PostgreSQL backend).
        # Every connection, once opened, stays; callers beyond ``pool_size`` wait for one.
        max_overflow=0,
        pool_pre_ping=False,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        # Statement parameters hold password and token hashes: never put them in logs.
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "connect", _utc_session)
    return engine


def _utc_session(dbapi_connection: Any, _record: Any) -> None:
    """Every session in UTC, whatever the database's default zone. psycopg then reads times
    with ``datetime.UTC`` instead of a ``ZoneInfo`` such as ``Etc/UTC``: the same instants, but
    only the former hits the codec's cache of spellings. A 1000-item batch's events name some
    1500 accounts, each with its creation time read back: spelled in about 0.2 ms instead of
    1.2. Nothing in our SQL depends on the session's zone. Done on connect, not through
    ``options``, which would replace the user's own from the URL or ``PGOPTIONS``."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # a SET inside a transaction the pool rolls back is undone
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET TIME ZONE 'UTC'")
    finally:
        cursor.close()
        dbapi_connection.autocommit = autocommit


def connections_per_process(pool_size: int) -> int:
    """The most connections one server process opens: its pool and the event hub's
    listener."""
    return pool_size + 1


def connection_limit(url: str) -> int:
    """Connections the database gives ordinary roles: ``max_connections`` less those
    reserved for superusers (and, from PostgreSQL 16, for ``pg_use_reserved_connections``)."""
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import text

    engine = create_sync_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            limit = conn.execute(
                text(
                    "SELECT current_setting('max_connections')::int"
                    " - current_setting('superuser_reserved_connections')::int"
                    " - coalesce(current_setting('reserved_connections', true)::int, 0)"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(limit)


def alembic_config(url: str | None = None) -> Config:
    """The migrations' configuration, for the database at ``url`` if given."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (blocking; run before serving)."""
    command.upgrade(alembic_config(url), revision)


def schema_is_current(url: str) -> bool:
    """True when the database is at the newest migration (``serve`` refuses otherwise)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine as create_sync_engine

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    engine = create_sync_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return current == heads
