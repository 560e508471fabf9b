"""Folding the appended balance changes of system accounts into their rows."""

from __future__ import annotations

from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

__all__ = ["FOLD_BATCH", "fold_balance_deltas"]

FOLD_BATCH = 10_000


@retry_on_conflict
async def fold_balance_deltas(uow: UnitOfWork, *, limit: int = FOLD_BATCH) -> int:
    """Fold up to ``limit`` of the oldest changes; how many (0 if another server is folding).

    A periodic job calls it until it returns less than ``limit``. Only bookkeeping: the
    money moved when the changes were appended, so no call is audited here.
    """
    async with uow:
        folded = await uow.ledger.fold_balance_deltas(limit=limit)
        await uow.connection.commit()
    return folded or 0
