"""Folding the appended balance changes of system accounts into their rows."""

from __future__ import annotations

from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork
from wallet_server.storage.repositories import Fold

__all__ = ["FOLD_BATCH", "Fold", "fold_balance_deltas"]

FOLD_BATCH = 10_000
_NOTHING = Fold(taken=0, folded=0, out_of_range=frozenset())


@retry_on_conflict
async def fold_balance_deltas(uow: UnitOfWork, *, limit: int = FOLD_BATCH) -> Fold:
    """Fold the accounts of the ``limit`` oldest changes, each with all its changes
    (nothing if another server is folding).

    A periodic job calls it while it takes ``limit`` changes and folds some. Only
    bookkeeping: the money moved when the changes were appended, so no call is audited here.
    An account whose row cannot hold its sum keeps it as changes; ``VerifyLedger`` reports
    its balance.
    """
    async with uow:
        fold = await uow.ledger.fold_balance_deltas(limit=limit)
        await uow.connection.commit()
    return fold or _NOTHING
