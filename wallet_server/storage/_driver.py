"""Statements sent on the psycopg connection beneath the SQL toolkit's, in its transaction.

The toolkit's work per statement (compiling or finding the compiled form, an execution
context, result processing, a greenlet switch) costs about three times the driver's own CPU.
Statements that run on every money call therefore go to the driver directly. They are
written like the toolkit's ``text()``, with ``:name`` placeholders, so one text can serve
both; it is translated to psycopg's ``%(name)s`` once per process.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from functools import cache
from typing import Any

from psycopg import AsyncConnection, pq
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection as SqlConnection

__all__ = [
    "Driver",
    "WritesAtCommit",
    "driver_of",
    "driver_sql",
    "fetch_rows",
    "hold_writes",
    "roll_back_if_open",
    "run_sql",
    "savepoint",
]

Driver = AsyncConnection[Any]

# ``:name`` but not the second colon of a ``::type`` cast.
_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@cache
def driver_sql(sql: str) -> str:
    """``sql`` with ``:name`` placeholders as ``%(name)s`` (and literal ``%`` doubled).

    Plain text substitution: a string literal in ``sql`` must not hold a colon before a
    name (none of the statements sent this way has one)."""
    return _PLACEHOLDER.sub(r"%(\1)s", sql.replace("%", "%%"))


async def fetch_rows(driver: Driver, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Run ``sql`` on the driver connection; its rows as named tuples (none if it returns
    no rows)."""
    async with driver.cursor(row_factory=namedtuple_row) as cur:
        await cur.execute(driver_sql(sql), params)
        return await cur.fetchall() if cur.description is not None else []


async def run_sql(driver: Driver, sql: str, params: Mapping[str, Any]) -> None:
    """Run ``sql`` (``:name`` placeholders) on the driver connection, for its effect only."""
    await driver.execute(driver_sql(sql), params)


async def driver_of(conn: SqlConnection) -> Driver:
    """The psycopg connection beneath the toolkit's ``conn`` (in its transaction)."""
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, AsyncConnection):
        raise TypeError(f"expected a psycopg connection, got {type(driver).__name__}")
    return driver


@contextlib.asynccontextmanager
async def savepoint(
    driver: Driver, *, undo_on: tuple[type[BaseException], ...]
) -> AsyncIterator[None]:
    """Undo the block's writes when it raises one of ``undo_on``; any other exception leaves
    them to the rollback of the whole transaction (which follows it anyway, and which a
    broken connection cannot refuse). Plain statements rather than psycopg's transaction
    block, whose bookkeeping the SQL toolkit's commit and rollback do not know.

    The savepoint is never released: the transaction's commit or rollback ends it, and the
    statements after the block run inside it, which changes nothing they do. A release is
    a round trip of its own, one in about fifteen of a payment's."""
    await driver.execute("SAVEPOINT call_effect")
    try:
        yield
    except undo_on:
        await driver.execute("ROLLBACK TO SAVEPOINT call_effect")
        raise


class WritesAtCommit:
    """Writes that nothing later in the transaction reads (a call's stored response, its
    events, its audit row), held back and sent with the COMMIT in one round trip.

    psycopg's pipeline mode sends them and the COMMIT without waiting for each answer; an
    error in any of them fails the commit, and the transaction rolls back whole. Held writes
    go out in the order they were added, after every statement the transaction ran before
    the commit.

    A savepoint takes :attr:`mark` when it begins and, when it is undone, forgets what was
    held since (:meth:`discard_since`); what was sent since is the database's to undo. So a
    savepoint must :meth:`send` what is held when it begins: sent inside it, writes held
    before it would be undone with it."""

    __slots__ = ("_driver", "_sent", "_writes", "refused")

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._writes: list[tuple[str, Mapping[str, Any]]] = []
        self._sent = 0
        self.refused = False  # a commit around it was refused: its transaction is still open

    def add(self, sql: str, params: Mapping[str, Any]) -> None:
        """Hold ``sql``, in psycopg's form (see :func:`driver_sql`), until the commit."""
        self._writes.append((sql, params))

    @property
    def held(self) -> int:
        """How many writes wait to be sent."""
        return len(self._writes)

    @property
    def mark(self) -> int:
        """How many writes were ever added: where a savepoint begins."""
        return self._sent + len(self._writes)

    def discard_since(self, mark: int) -> None:
        """Forget the writes added after :attr:`mark` was ``mark`` and not sent yet."""
        del self._writes[max(0, mark - self._sent) :]

    async def send(self) -> None:
        """Send the held writes now, in one round trip, without committing."""
        if self._writes:
            await self._send(commit=False)

    async def commit(self) -> None:
        """Send the held writes and COMMIT; afterwards the driver connection is idle, and the
        SQL toolkit's own commit has nothing left to send."""
        await self._send(commit=True)

    async def _send(self, *, commit: bool) -> None:
        writes, self._writes = self._writes, []
        self._sent += len(writes)
        # Nothing raises inside the pipeline block: an error met while sending (a statement
        # before it failed) is held until the pipeline is drained, so that psycopg does not
        # log the error it meets when draining as one it ignored.
        failed: Exception | None = None
        try:
            async with self._driver.pipeline():
                try:
                    for sql, params in writes:
                        await self._driver.execute(sql, params)
                    if commit:
                        # A plain statement rather than ``driver.commit()``, which would wait
                        # for its answer before the pipeline's own closing sync.
                        await self._driver.execute("COMMIT")
                except Exception as exc:  # raised below, once drained
                    failed = exc
        except Exception:
            if failed is None:
                raise
        finally:
            await _close_if_cut_off(self._driver)
        if failed is not None:
            raise failed


async def _close_if_cut_off(driver: Driver) -> None:
    """A pipeline left before all its answers were read (a cancellation while they were
    coming) leaves the connection in pipeline mode with answers nobody will read; it must
    not serve another transaction, so it is closed, and the pool replaces it."""
    if not driver.closed and driver.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        await driver.close()


# The holder of each checked-out connection's transaction, for the commit guard below.
_holders: weakref.WeakKeyDictionary[Connection, WritesAtCommit] = weakref.WeakKeyDictionary()
_guarded: weakref.WeakSet[Engine] = weakref.WeakSet()


def hold_writes(conn: SqlConnection, driver: Driver) -> WritesAtCommit:
    """A holder for the writes of ``conn``'s transaction. While it holds any, the toolkit's
    own commit of ``conn`` is refused before it is sent (it would commit without them), and
    the holder notes it (:attr:`WritesAtCommit.refused`); commit through
    :meth:`WritesAtCommit.commit`."""
    engine = conn.sync_engine
    if engine not in _guarded:
        event.listen(engine, "commit", _refuse_commit_while_holding)
        _guarded.add(engine)
    held = WritesAtCommit(driver)
    _holders[conn.sync_connection] = held  # type: ignore[index]
    return held


def _refuse_commit_while_holding(conn: Connection) -> None:
    held = _holders.get(conn)
    if held is not None and held.held:
        held.refused = True
        raise RuntimeError(
            "commit refused: the transaction holds writes that only the unit of work's "
            "commit() sends"
        )


async def roll_back_if_open(driver: Driver) -> None:
    """Roll back the driver's transaction if it is still open. A commit refused before it
    was sent (:attr:`WritesAtCommit.refused`) leaves it so while the toolkit counts it as
    ended, and the pool would hand the connection on as it is."""
    if driver.info.transaction_status in (
        pq.TransactionStatus.INTRANS,
        pq.TransactionStatus.INERROR,
    ):
        await driver.rollback()
