"""Sessions of the server's engine: UTC whatever the database or the URL asks for, the URL's
other session options kept, and a pool that keeps its connections and opens no more."""

from __future__ import annotations

import asyncio
from datetime import UTC
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.storage import create_engine, driver_of


def _with_options(url: str, options: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(options)}"


async def test_sessions_are_in_utc_and_keep_the_urls_other_options(database_url: str) -> None:
    url = _with_options(database_url, "-c TimeZone=Europe/Amsterdam -c statement_timeout=4321")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW TimeZone"))).scalar_one() == "UTC"
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar_one() == "4321ms"
            read = (await conn.execute(text("SELECT now()"))).scalar_one()
            assert read.tzinfo is UTC
            driver = await driver_of(conn)
            cur = await driver.execute("SELECT now()")
            row = await cur.fetchone()
            assert row is not None
            assert row[0].tzinfo is UTC
    finally:
        await engine.dispose()


async def test_the_zone_outlives_a_rolled_back_transaction(database_url: str) -> None:
    url = _with_options(database_url, "-c TimeZone=Asia/Kolkata")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # a transaction begins...
            await conn.rollback()  # ...and is rolled back
            assert (await conn.execute(text("SHOW TimeZone"))).scalar_one() == "UTC"
        async with engine.connect() as conn:  # the same pooled session, after the pool's reset
            assert (await conn.execute(text("SHOW TimeZone"))).scalar_one() == "UTC"
    finally:
        await engine.dispose()


async def test_the_pool_keeps_its_connections_and_opens_no_more_than_its_size(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=3)

    async def check_out_all() -> tuple[list[AsyncConnection], set[int]]:
        conns = [await engine.connect() for _ in range(3)]
        pids = {(await c.execute(text("SELECT pg_backend_pid()"))).scalar_one() for c in conns}
        return conns, pids

    try:
        conns, first = await check_out_all()
        assert len(first) == 3
        with pytest.raises(TimeoutError):  # a fourth caller waits for one of the three
            await asyncio.wait_for(engine.connect().start(), 0.3)
        for conn in conns:
            await conn.close()
        conns, again = await check_out_all()
        assert again == first  # the same sessions: none was closed on its way back
        for conn in conns:
            await conn.close()
    finally:
        await engine.dispose()
