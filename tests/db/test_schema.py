"""The migrations create exactly the tables the code queries, and history is append-only."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from wallet_server.storage import connection_limit, metadata, schema_is_current, sqlalchemy_url


def test_migrated_schema_matches_the_table_definitions(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_schema_is_reported_current(database_url: str) -> None:
    assert schema_is_current(database_url)


def test_the_connection_limit_leaves_out_the_reserved_connections(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        settings: dict[str, int] = dict(
            conn.execute(
                "SELECT name, setting::int FROM pg_settings WHERE name IN "
                "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
            ).fetchall()
        )
    reserved = settings["superuser_reserved_connections"] + settings.get("reserved_connections", 0)
    assert reserved > 0  # PostgreSQL's defaults reserve some: the subtraction is exercised
    assert connection_limit(database_url) == settings["max_connections"] - reserved


_SETUP = (
    "INSERT INTO users (user_id, username, password_hash, display_name) "
    "VALUES ('00000000-0000-0000-0000-0000000000aa', 'schema-test', 'x', 'x')",
    "INSERT INTO accounts (account_id, kind, currency, owner_user_id) VALUES "
    "('00000000-0000-0000-0000-0000000000bb', 'user', 'USD', "
    "'00000000-0000-0000-0000-0000000000aa')",
    "INSERT INTO transactions (transaction_id, kind, status, currency, amount, initiator) "
    "VALUES ('00000000-0000-0000-0000-0000000000cc', 'deposit', 'posted', 'USD', 1, 'test')",
    "INSERT INTO postings (transaction_id, account_id, amount, currency) VALUES "
    "('00000000-0000-0000-0000-0000000000cc', '00000000-0000-0000-0000-0000000000bb', 1, 'USD')",
)


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("UPDATE postings SET amount = amount + 1", psycopg.errors.InsufficientPrivilege),
        ("DELETE FROM postings", psycopg.errors.InsufficientPrivilege),
        ("UPDATE accounts SET posted = -1", psycopg.errors.CheckViolation),
        ("DELETE FROM accounts", psycopg.errors.InsufficientPrivilege),
        ("DELETE FROM transactions", psycopg.errors.InsufficientPrivilege),
        (
            "UPDATE accounts SET account_id = gen_random_uuid()",
            psycopg.errors.InsufficientPrivilege,
        ),
        (
            "UPDATE transactions SET transaction_id = gen_random_uuid()",
            psycopg.errors.InsufficientPrivilege,
        ),
        # One good leg and one naming a missing transaction, then a missing account: the
        # statement is refused as a whole.
        (
            "INSERT INTO postings (transaction_id, account_id, amount, currency) VALUES "
            "('00000000-0000-0000-0000-0000000000cc', '00000000-0000-0000-0000-0000000000bb', "
            "1, 'USD'), (gen_random_uuid(), '00000000-0000-0000-0000-0000000000bb', -1, 'USD')",
            psycopg.errors.ForeignKeyViolation,
        ),
        (
            "INSERT INTO postings (transaction_id, account_id, amount, currency) VALUES "
            "('00000000-0000-0000-0000-0000000000cc', '00000000-0000-0000-0000-0000000000bb', "
            "1, 'USD'), ('00000000-0000-0000-0000-0000000000cc', gen_random_uuid(), -1, 'USD')",
            psycopg.errors.ForeignKeyViolation,
        ),
    ],
)
def test_history_is_append_only_and_wallets_never_negative_even_by_direct_sql(
    database_url: str, statement: str, error: type[Exception]
) -> None:
    """Postings name existing transactions and accounts (checked per statement), and those
    are never deleted nor given another id."""
    with psycopg.connect(database_url) as conn:
        for setup in _SETUP:
            conn.execute(setup)
        with pytest.raises(error):
            conn.execute(statement)
        conn.rollback()
