"""Accounts, transactions and the double-entry rules that move money between them.

Every transaction is a set of postings that sums to zero per currency. User wallets may
never go below zero available; system accounts (partner settlement, fees, FX pool,
suspense, promotions) may. ``available = posted - pending_out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from wallet_server.domain._errors import FailedPrecondition, Reason
from wallet_server.domain._money import INT64_MAX, INT64_MIN, Money


class AccountKind(StrEnum):
    USER = "user"
    SETTLEMENT = "settlement"  # a partner's clearing account: money enters and leaves here
    FEES = "fees"
    FX_POOL = "fx_pool"
    SUSPENSE = "suspense"
    PROMOTIONS = "promotions"

    @property
    def may_go_negative(self) -> bool:
        return self is not AccountKind.USER


class TransactionKind(StrEnum):
    DEPOSIT = "deposit"
    TRANSFER = "transfer"
    WITHDRAWAL = "withdrawal"
    PAYMENT = "payment"
    REFUND = "refund"
    EXCHANGE = "exchange"
    REVERSAL = "reversal"
    CASHBACK = "cashback"


class TransactionStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    HELD_FOR_REVIEW = "held_for_review"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Account:
    account_id: UUID
    kind: AccountKind
    currency: str
    owner_user_id: UUID | None
    partner_id: UUID | None
    posted: int
    pending_out: int
    frozen: bool
    created_at: datetime

    @property
    def available(self) -> int:
        return self.posted - self.pending_out

    def money(self, amount_minor: int) -> Money:
        return Money(self.currency, amount_minor)

    def after_posting(self, amount: int) -> Account:
        """The account once a leg of ``amount`` (negative: a debit) is posted to it."""
        # Spelled out rather than dataclasses.replace: this runs for every leg of every
        # grouped or batched transfer, and replace costs three times as much.
        return Account(
            self.account_id,
            self.kind,
            self.currency,
            self.owner_user_id,
            self.partner_id,
            self.posted + amount,
            self.pending_out,
            self.frozen,
            self.created_at,
        )


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of a transaction: ``amount`` is signed (negative = debit).

    ``currency`` is the transaction's currency unless set (an exchange has legs in two).
    """

    account_id: UUID
    amount: int
    currency: str = ""


@dataclass(frozen=True, slots=True)
class Transaction:
    transaction_id: UUID
    kind: TransactionKind
    status: TransactionStatus
    amount: Money
    from_account_id: UUID | None
    to_account_id: UUID | None
    memo: str
    external_reference: str
    created_at: datetime
    posted_at: datetime | None
    postings: tuple[Posting, ...]
    reverses_transaction_id: UUID | None = None
    partner_id: UUID | None = None  # depositor, payout partner or merchant
    order_id: UUID | None = None
    promotion_id: UUID | None = None
    to_amount: Money | None = None  # exchanges: what the destination received
    exchange_rate: str = ""  # exchanges: decimal text
    status_message: str = ""  # e.g. why a withdrawal failed
    # Read-side link, not part of the row: the REVERSAL of this transaction, once there is one.
    reversed_by_transaction_id: UUID | None = None


def check_balanced(postings: tuple[Posting, ...]) -> None:
    """Double entry: legs are non-zero and sum to zero in each currency."""
    totals: dict[str, int] = {}
    for p in postings:
        if p.amount == 0:
            raise ValueError("postings must be non-zero and sum to zero")
        totals[p.currency] = totals.get(p.currency, 0) + p.amount
    if any(totals.values()):
        raise ValueError("postings must be non-zero and sum to zero per currency")


def _ensure_can_receive(account: Account, amount: Money) -> None:
    if account.frozen:
        raise FailedPrecondition("the destination account is frozen", reason=Reason.ACCOUNT_FROZEN)
    if account.currency != amount.currency:
        raise FailedPrecondition(
            f"the destination account holds {account.currency}, not {amount.currency}",
            reason=Reason.CURRENCY_MISMATCH,
        )
    if account.posted + amount.amount_minor > INT64_MAX:
        raise FailedPrecondition(
            "the destination balance would overflow", reason=Reason.AMOUNT_OVERFLOW
        )


def _ensure_can_send(account: Account, amount: Money) -> None:
    if account.frozen:
        raise FailedPrecondition("the source account is frozen", reason=Reason.ACCOUNT_FROZEN)
    if account.currency != amount.currency:
        raise FailedPrecondition(
            f"the source account holds {account.currency}, not {amount.currency}",
            reason=Reason.CURRENCY_MISMATCH,
        )
    if not account.kind.may_go_negative and account.available < amount.amount_minor:
        raise FailedPrecondition(
            f"available {Money(account.currency, account.available).format()} "
            f"is less than {amount.format()}",
            reason=Reason.INSUFFICIENT_FUNDS,
        )
    if account.posted - amount.amount_minor < INT64_MIN:
        raise FailedPrecondition("the source balance would overflow", reason=Reason.AMOUNT_OVERFLOW)


def plan_transfer(source: Account, destination: Account, amount: Money) -> tuple[Posting, ...]:
    """Decide a movement of ``amount`` from ``source`` to ``destination``; return its legs.

    Raises the business error that refuses it. Checks run in a fixed order so the same
    situation always gives the same reason: same account, frozen, currency, funds.
    """
    if source.account_id == destination.account_id:
        raise FailedPrecondition(
            "source and destination are the same account", reason=Reason.SAME_ACCOUNT
        )
    _ensure_can_send(source, amount)
    _ensure_can_receive(destination, amount)
    postings = (
        Posting(source.account_id, -amount.amount_minor, amount.currency),
        Posting(destination.account_id, amount.amount_minor, amount.currency),
    )
    check_balanced(postings)
    return postings
