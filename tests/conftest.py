"""Shared fixtures: one migrated database per run, TLS material, a server on port 0.

``WALLET_TEST_DATABASE_URL`` names a PostgreSQL server to create this run's database in;
without it the run starts the embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.devdb import start_embedded_database
from wallet_server.security import DevPkiPaths, ensure_dev_pki
from wallet_server.storage import create_engine, metadata, migrate

TEST_DB_ENV = "WALLET_TEST_DATABASE_URL"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly created and migrated database, dropped at the end of the run."""
    name = f"wallet_test_{uuid.uuid4().hex[:12]}"
    server_url = os.environ.get(TEST_DB_ENV)
    embedded = None
    if server_url:
        admin_url = server_url
    else:
        embedded = start_embedded_database(tmp_path_factory.mktemp("pg"), database="postgres")
        admin_url = embedded.url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = (
        _with_database(server_url, name) if server_url else embedded.url(name)  # type: ignore[union-attr]
    )
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if embedded is not None:
            embedded.stop()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=20)
    yield eng
    await eng.dispose()


_TABLES = ", ".join(t.name for t in metadata.sorted_tables)


@pytest.fixture
async def clean_db(engine: AsyncEngine) -> AsyncEngine:
    """Empty every table before the test (cheap, and the server may commit on its own)."""
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPkiPaths:
    return ensure_dev_pki(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
