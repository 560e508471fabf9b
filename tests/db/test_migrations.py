"""Migrations that move or retype data keep every value, both ways."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command
from psycopg import sql

from wallet_server.storage import migrate
from wallet_server.storage._engine import alembic_config


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
    command.downgrade(alembic_config(url), revision)


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_0006_numbers_move_to_their_own_table_and_back(scratch_url: str) -> None:
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


_COLUMN_TYPES = """
    SELECT table_name, data_type FROM information_schema.columns
    WHERE (table_name, column_name) IN (('idempotency_keys', 'response'), ('outbox', 'payload'))
    ORDER BY table_name
"""


def test_0007_documents_become_text_and_back_unchanged(scratch_url: str) -> None:
    migrate(scratch_url, "0006")
    # As psycopg and the server wrote them: compact, keys in the encoder's order.
    response = '{"result":{"transaction_id":"t-1","amount":{"currency":"EUR","amount_minor":5}}}'
    payload = '{"type":"transaction_created","accounts":[],"note":"caf\u00e9 \u20ac"}'
    with psycopg.connect(scratch_url) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (principal, request_id, method, fingerprint, response)"
            " VALUES ('user:1', gen_random_uuid(), 'Transfer', '\\x00', %s::json),"
            " ('user:1', gen_random_uuid(), 'Transfer', '\\x01', NULL)",
            (response,),
        )
        conn.execute(
            "INSERT INTO outbox (type, account_ids, payload) VALUES ('t', '{}', %s::json)",
            (payload,),
        )

    migrate(scratch_url)

    assert _rows(scratch_url, _COLUMN_TYPES) == [("idempotency_keys", "text"), ("outbox", "text")]
    assert _rows(scratch_url, "SELECT response FROM idempotency_keys ORDER BY fingerprint") == [
        (response,),
        (None,),
    ]
    assert _rows(scratch_url, "SELECT payload FROM outbox") == [(payload,)]

    _downgrade(scratch_url, "0006")

    assert _rows(scratch_url, _COLUMN_TYPES) == [("idempotency_keys", "json"), ("outbox", "json")]
    assert _rows(
        scratch_url, "SELECT response::text FROM idempotency_keys ORDER BY fingerprint"
    ) == [
        (response,),
        (None,),
    ]
    assert _rows(scratch_url, "SELECT payload::text FROM outbox") == [(payload,)]
