"""Migration 0006 moves event numbers out of the outbox rows and back, keeping each one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg import sql

import wallet_server.storage
from wallet_server.storage import migrate, sqlalchemy_url

_MIGRATIONS = Path(wallet_server.storage.__file__).parent / "migrations"


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """An empty database on the suite's server, dropped afterwards."""
    name = f"wallet_migration_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(database_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _downgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.downgrade(config, revision)


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_numbers_move_to_their_own_table_and_back(scratch_url: str) -> None:
    migrate(scratch_url, "0005")
    with psycopg.connect(scratch_url) as conn:
        conn.execute(
            "INSERT INTO outbox (type, account_ids, payload) "
            "SELECT 'transaction_created', ARRAY[gen_random_uuid()], json_build_object('n', n) "
            "FROM generate_series(1, 4) AS n"
        )
        # Events 1 and 3 were numbered (3 first: it committed first); 2 and 4 wait.
        conn.execute("UPDATE outbox SET sequence = 1 WHERE event_id = 3")
        conn.execute("UPDATE outbox SET sequence = 2 WHERE event_id = 1")

    migrate(scratch_url)

    assert _rows(scratch_url, "SELECT sequence, event_id FROM event_sequence ORDER BY 1") == [
        (1, 3),
        (2, 1),
    ]
    assert _rows(scratch_url, "SELECT event_ids FROM outbox_unsequenced") == [([2, 4],)]

    _downgrade(scratch_url, "0005")

    assert _rows(scratch_url, "SELECT event_id, sequence FROM outbox ORDER BY 1") == [
        (1, 2),
        (2, None),
        (3, 1),
        (4, None),
    ]
