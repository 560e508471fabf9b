"""Reversals: an operator's correction of a posted transaction by its exact opposite.

History is never edited: the original stays as it is and a new POSTED REVERSAL transaction
carries the negated legs. A transaction is reversed at most once and a reversal is never
reversed itself. Frozen accounts do not stop a reversal (it is an operator action), but a
user account is never driven below zero available: if the money was spent, the reversal is
refused with INSUFFICIENT_FUNDS.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from wallet_server.domain._errors import FailedPrecondition, Reason
from wallet_server.domain._ledger import (
    Account,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
    check_balanced,
)
from wallet_server.domain._money import INT64_MAX, INT64_MIN, Money

_ORDER_KINDS = frozenset(
    {TransactionKind.PAYMENT, TransactionKind.REFUND, TransactionKind.CASHBACK}
)


def check_reversible(original: Transaction, *, reversed_by: UUID | None) -> None:
    """FAILED_PRECONDITION unless ``original`` is a POSTED non-REVERSAL not yet reversed."""
    if original.kind is TransactionKind.REVERSAL:
        raise FailedPrecondition(
            f"transaction {original.transaction_id} is a reversal; a reversal cannot be reversed"
        )
    if original.kind in _ORDER_KINDS:
        # Their effects live in an order or a promotion budget too; reversing only the money
        # would let a later refund pay the buyer twice. Refunds are the way back for these.
        raise FailedPrecondition(
            f"transaction {original.transaction_id} is a {original.kind.value}: "
            "use PartnerService.RefundPayment instead"
        )
    if original.status is not TransactionStatus.POSTED:
        raise FailedPrecondition(
            f"transaction {original.transaction_id} is {original.status.value.upper()}; "
            "only POSTED transactions can be reversed"
        )
    if reversed_by is not None:
        raise FailedPrecondition(
            f"transaction {original.transaction_id} was already reversed by {reversed_by}"
        )


def reversal_legs(original: Transaction) -> tuple[Posting, ...]:
    """The original's legs with opposite signs, each in its own currency."""
    legs = tuple(
        Posting(p.account_id, -p.amount, p.currency or original.amount.currency)
        for p in original.postings
    )
    if not legs:
        raise ValueError("a posted transaction has legs")
    check_balanced(legs)
    return legs


def plan_reversal(
    original: Transaction,
    accounts: Mapping[UUID, Account],
    *,
    reversed_by: UUID | None,
) -> tuple[Posting, ...]:
    """Decide the reversal of ``original`` given its locked ``accounts``; return its legs.

    Refusals: FAILED_PRECONDITION (see check_reversible); INSUFFICIENT_FUNDS when a user
    account's available balance is lower than what the reversal takes back from it;
    AMOUNT_OVERFLOW when a balance would leave int64.
    """
    check_reversible(original, reversed_by=reversed_by)
    legs = reversal_legs(original)
    change: dict[UUID, int] = {}
    for leg in legs:
        change[leg.account_id] = change.get(leg.account_id, 0) + leg.amount
    for account_id, delta in sorted(change.items()):
        account = accounts[account_id]
        if delta < 0 and not account.kind.may_go_negative and account.available + delta < 0:
            raise FailedPrecondition(
                f"account {account_id} has {Money(account.currency, account.available).format()} "
                f"available; the reversal takes back {Money(account.currency, -delta).format()}",
                reason=Reason.INSUFFICIENT_FUNDS,
            )
        if not INT64_MIN <= account.posted + delta <= INT64_MAX:
            raise FailedPrecondition(
                f"the balance of account {account_id} would overflow",
                reason=Reason.AMOUNT_OVERFLOW,
            )
    return legs


__all__ = ["check_reversible", "plan_reversal", "reversal_legs"]
