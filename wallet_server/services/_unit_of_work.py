"""The unit of work: one database transaction, its repositories, its clock."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import TracebackType
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from wallet_server.services._call import current_call
from wallet_server.storage import (
    Driver,
    WritesAtCommit,
    driver_of,
    hold_writes,
    roll_back_if_open,
    savepoint,
)
from wallet_server.storage.repositories import (
    AuditRepository,
    BatchRepository,
    EventRepository,
    ExchangeRepository,
    IdempotencyRepository,
    LedgerRepository,
    MovementGroupRepository,
    OrderRepository,
    PrincipalRepository,
    PromotionRepository,
    StatementRepository,
    UserRepository,
    VerificationRepository,
    WithdrawalRepository,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Savepoint:
    """What :meth:`UnitOfWork.savepoint` yields."""

    def __init__(self, nested: AsyncTransaction, held: WritesAtCommit, mark: int) -> None:
        self._nested = nested
        self._held = held
        self._mark = mark

    async def rollback(self) -> None:
        """Undo the block's writes so far, those sent and those held for the commit."""
        await self._nested.rollback()
        self._held.discard_since(self._mark)


class UnitOfWork:
    """``async with uow:`` opens a transaction; ``commit()`` ends it; leaving rolls back.

    Re-enterable: each ``async with`` is a fresh transaction, so a use case can be retried
    with the same object. ``commit`` also writes the current call's audit row inside the
    transaction.

    Writes nothing later in the transaction reads (stored responses, events, the audit row)
    are held and sent with the COMMIT in one round trip (``storage.WritesAtCommit``). So a
    transaction must end through :meth:`commit`: the connection's own commit is refused
    while it holds any.
    """

    users: UserRepository
    principals: PrincipalRepository
    ledger: LedgerRepository
    idempotency: IdempotencyRepository
    audit: AuditRepository
    events: EventRepository
    withdrawals: WithdrawalRepository
    orders: OrderRepository
    exchange: ExchangeRepository
    promotions: PromotionRepository
    verification: VerificationRepository
    statements: StatementRepository

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = utc_now,
        new_id: Callable[[], UUID] = uuid.uuid4,
    ) -> None:
        self._engine = engine
        self.clock = clock
        self.new_id = new_id
        self._conn: AsyncConnection | None = None
        self._driver: Driver | None = None
        self._tx: AsyncTransaction | None = None
        self._at_commit: WritesAtCommit | None = None

    async def __aenter__(self) -> UnitOfWork:
        conn = await self._engine.connect()
        try:
            self._tx = await conn.begin()
            # The psycopg connection beneath, in the same transaction: the statements of
            # every money call go to it directly (see storage/_driver.py).
            driver = await driver_of(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._driver = driver
        self._at_commit = at_commit = hold_writes(conn, driver)
        self.users = UserRepository(conn)
        self.principals = PrincipalRepository(conn)
        self.ledger = LedgerRepository(conn, driver)
        self.idempotency = IdempotencyRepository(conn, driver, at_commit)
        self.audit = AuditRepository(conn, at_commit)
        self.events = EventRepository(conn, driver, at_commit)
        self.withdrawals = WithdrawalRepository(conn)
        self.orders = OrderRepository(conn, driver)
        self.exchange = ExchangeRepository(conn)
        self.promotions = PromotionRepository(conn, driver)
        self.verification = VerificationRepository(conn)
        self.statements = StatementRepository(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx, driver, held = self._conn, self._tx, self._driver, self._at_commit
        self._conn = self._tx = self._driver = self._at_commit = None
        if conn is None:
            return
        try:
            if tx is not None and tx.is_active:
                await tx.rollback()
            elif driver is not None and held is not None and held.refused:
                await roll_back_if_open(driver)
        except Exception:
            if exc is None:
                raise
            # The connection broke on the way out (a cancellation closes it): the error
            # already leaving, a cancellation above all, must not be replaced by this one.
            with contextlib.suppress(Exception):
                await conn.invalidate()
        finally:
            if held is not None:
                held.discard_since(0)  # nothing unsent outlives the transaction
            await conn.close()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._conn

    @property
    def driver(self) -> Driver:
        """The psycopg connection beneath :attr:`connection`, in the same transaction."""
        if self._driver is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._driver

    async def movement_groups(self) -> MovementGroupRepository:
        """Set-based reads and writes for transfer groups, on this transaction's driver
        connection (the hot path skips the SQL toolkit's per-statement work)."""
        return MovementGroupRepository(self.driver, self._held())

    async def batches(self) -> BatchRepository:
        """Set-based claims and writes for a partner's batch, on this transaction's driver
        connection, like :meth:`movement_groups`."""
        return BatchRepository(self.driver)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Savepoint]:
        """``async with uow.savepoint():`` undoes only the block's writes (those sent and
        those held for the commit) if it raises; ``rollback()`` on what it yields undoes
        them on request."""
        async with self._held_since_here(undone_on=(BaseException,)) as (held, mark):
            nested = await self.connection.begin_nested()
            try:
                yield Savepoint(nested, held, mark)
            except BaseException:
                await self._undo_on_the_way_out(nested)
                raise
            if nested.is_active:
                await nested.commit()

    async def _undo_on_the_way_out(self, nested: AsyncTransaction) -> None:
        """Roll the savepoint back as an exception leaves it. On a connection that a
        cancellation closed, the transaction is gone with it: the exception already leaving,
        a cancellation above all, must not be replaced by the rollback's."""
        if not nested.is_active:
            return
        try:
            await nested.rollback()
        except Exception:
            if not self.driver.closed:
                raise

    @contextlib.asynccontextmanager
    async def driver_savepoint(
        self, *, undo_on: tuple[type[BaseException], ...]
    ) -> AsyncIterator[None]:
        """``async with uow.driver_savepoint(undo_on=...):`` undoes only the block's writes
        (sent and held) if it raises one of ``undo_on`` (the transaction goes on); cheaper
        than :meth:`savepoint`, with no rollback on request."""
        async with (
            self._held_since_here(undone_on=undo_on),
            savepoint(self.driver, undo_on=undo_on),
        ):
            yield

    @contextlib.asynccontextmanager
    async def _held_since_here(
        self, *, undone_on: tuple[type[BaseException], ...]
    ) -> AsyncIterator[tuple[WritesAtCommit, int]]:
        """A savepoint's share of the held writes: those held before it are sent first (sent
        inside it, they would be undone with it); those held inside it are forgotten if it
        is undone by one of ``undone_on``. Yields the holder and the savepoint's mark."""
        held = self._held()
        await held.send()
        mark = held.mark
        try:
            yield held, mark
        except undone_on:
            held.discard_since(mark)
            raise

    async def send_held_writes(self) -> None:
        """Send the writes held for the commit now, inside the transaction: for a caller
        that must read what it wrote."""
        await self._held().send()

    def _held(self) -> WritesAtCommit:
        if self._at_commit is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._at_commit

    async def commit(self, *, code: str = "OK") -> None:
        """Commit, with the current call's audit row (outcome ``code``) in the same transaction."""
        if self._tx is None:
            raise RuntimeError("unit of work used outside 'async with'")
        held = self._held()
        if held.refused:
            raise RuntimeError("this transaction's commit was refused; it can only roll back")
        record = current_call()
        if record is not None and not record.audited:
            self.audit.append([record.entry(code)])
        if held.held:
            await held.commit()
        await self._tx.commit()  # after the held writes' COMMIT, only the toolkit's bookkeeping
        if record is not None:
            record.audited = True

    def now(self) -> datetime:
        return self.clock()
