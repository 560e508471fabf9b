"""Use cases: verification of the ledger's invariants (AdminService.VerifyLedger)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wallet_server.domain import LedgerViolation, OperatorPrincipal
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class VerifyLedger:
    caller: OperatorPrincipal


@dataclass(frozen=True, slots=True)
class LedgerReport:
    """Every violation found (empty: the ledger is sound), in one consistent snapshot."""

    violations: tuple[LedgerViolation, ...]
    accounts_checked: int
    transactions_checked: int
    verified_at: datetime


@retry_on_conflict
async def verify_ledger(cmd: VerifyLedger, uow: UnitOfWork) -> LedgerReport:
    """Run every ledger invariant over one snapshot of the database. Read-only."""
    async with uow:
        await uow.verification.use_snapshot()
        verified_at = uow.now()
        accounts, transactions = await uow.verification.counts()
        violations = await uow.verification.violations()
        await uow.commit()
        return LedgerReport(tuple(violations), accounts, transactions, verified_at)


__all__ = ["LedgerReport", "VerifyLedger", "verify_ledger"]
