"""The unit of work: one database transaction, its repositories, its clock."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from wallet_server.services._call import current_call
from wallet_server.storage import Driver, driver_of, savepoint
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


class UnitOfWork:
    """``async with uow:`` opens a transaction; ``commit()`` ends it; leaving rolls back.

    Re-enterable: each ``async with`` is a fresh transaction, so a use case can be retried
    with the same object. ``commit`` also writes the current call's audit row inside the
    transaction.
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
        self.users = UserRepository(conn)
        self.principals = PrincipalRepository(conn)
        self.ledger = LedgerRepository(conn, driver)
        self.idempotency = IdempotencyRepository(conn, driver)
        self.audit = AuditRepository(conn, driver)
        self.events = EventRepository(conn, driver)
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
        conn, tx = self._conn, self._tx
        self._conn = self._tx = self._driver = None
        if conn is None:
            return
        try:
            if tx is not None and tx.is_active:
                await tx.rollback()
        finally:
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
        return MovementGroupRepository(self.driver)

    async def batches(self) -> BatchRepository:
        """Set-based claims and writes for a partner's batch, on this transaction's driver
        connection, like :meth:`movement_groups`."""
        return BatchRepository(self.driver)

    def savepoint(self) -> AsyncTransaction:
        """``async with uow.savepoint():`` undoes only the block's writes if it raises;
        ``rollback()`` on what it yields undoes them on request."""
        return self.connection.begin_nested()

    def driver_savepoint(
        self, *, undo_on: tuple[type[BaseException], ...]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with uow.driver_savepoint(undo_on=...):`` undoes only the block's writes if
        it raises one of ``undo_on`` (the transaction goes on); cheaper than
        :meth:`savepoint`, with no rollback on request."""
        return savepoint(self.driver, undo_on=undo_on)

    async def commit(self, *, code: str = "OK") -> None:
        """Commit, with the current call's audit row (outcome ``code``) in the same transaction."""
        if self._tx is None:
            raise RuntimeError("unit of work used outside 'async with'")
        record = current_call()
        if record is not None and not record.audited:
            await self.audit.append([record.entry(code)])
        await self._tx.commit()
        if record is not None:
            record.audited = True

    def now(self) -> datetime:
        return self.clock()
