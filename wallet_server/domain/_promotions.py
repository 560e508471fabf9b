"""Cashback promotions: a percentage of a qualifying payment, capped, within a budget.

Cashback = floor(payment * basis_points / 10000) in minor units, reduced to the per-payment cap
and to what remains of the budget; none when that is zero. Minor units make the rule the same
for every currency exponent (JPY 0, USD 2, KWD 3): the floor is always to a whole minor unit.
At most one promotion pays per payment: the one that pays the most.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from wallet_server.domain._errors import FieldViolation, InvalidArgument
from wallet_server.domain._money import Money

BASIS_POINTS_PER_WHOLE = 10_000
MAX_PROMOTION_NAME_LENGTH = 100


class PromotionStatus(StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    ENDED = "ended"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Promotion:
    promotion_id: UUID
    display_name: str
    cashback_basis_points: int
    max_cashback_per_payment: Money
    budget: Money
    spent: Money
    min_payment_amount: Money | None
    merchant_partner_ids: tuple[UUID, ...]  # empty: every merchant qualifies
    merchant_names: tuple[str, ...]
    start_time: datetime
    end_time: datetime
    ended_at: datetime | None  # set by EndPromotion
    funding_account_id: UUID
    created_at: datetime

    @property
    def currency(self) -> str:
        return self.budget.currency

    @property
    def remaining_minor(self) -> int:
        return self.budget.amount_minor - self.spent.amount_minor

    def status_at(self, now: datetime) -> PromotionStatus:
        if self.ended_at is not None or now >= self.end_time:
            return PromotionStatus.ENDED
        if self.remaining_minor <= 0:
            return PromotionStatus.EXHAUSTED
        if now < self.start_time:
            return PromotionStatus.SCHEDULED
        return PromotionStatus.ACTIVE

    def qualifies(self, payment: Money, merchant_partner_id: UUID, at: datetime) -> bool:
        """Whether a payment of ``payment`` to this merchant at ``at`` earns cashback here."""
        return (
            self.status_at(at) is PromotionStatus.ACTIVE
            and payment.currency == self.currency
            and (
                self.min_payment_amount is None
                or payment.amount_minor >= self.min_payment_amount.amount_minor
            )
            and (not self.merchant_partner_ids or merchant_partner_id in self.merchant_partner_ids)
        )

    def cashback_for(self, payment: Money, merchant_partner_id: UUID, at: datetime) -> Money:
        """The cashback this promotion pays on the payment; zero when it does not qualify."""
        if not self.qualifies(payment, merchant_partner_id, at):
            return Money.zero(self.currency)
        return Money(
            self.currency,
            cashback_minor(
                payment.amount_minor,
                basis_points=self.cashback_basis_points,
                cap=self.max_cashback_per_payment.amount_minor,
                remaining=self.remaining_minor,
            ),
        )


def cashback_minor(payment_minor: int, *, basis_points: int, cap: int, remaining: int) -> int:
    """min(floor(payment * basis_points / 10000), cap, remaining), never below zero."""
    share = payment_minor * basis_points // BASIS_POINTS_PER_WHOLE
    return max(0, min(share, cap, remaining))


def best_cashback(
    promotions: Iterable[Promotion], payment: Money, merchant_partner_id: UUID, at: datetime
) -> tuple[Promotion, Money] | None:
    """The promotion that pays the most on this payment, with its cashback; None if none pays.

    Ties go to the promotion created first (then the smaller id), so the choice is stable.
    """
    best: tuple[Promotion, Money] | None = None
    for promotion in sorted(promotions, key=lambda p: (p.created_at, p.promotion_id)):
        cashback = promotion.cashback_for(payment, merchant_partner_id, at)
        if cashback.is_positive() and (
            best is None or cashback.amount_minor > best[1].amount_minor
        ):
            best = (promotion, cashback)
    return best


def spend_promotion_budget(promotion: Promotion, cashback: Money) -> Promotion:
    """The promotion after paying ``cashback``; the budget is never exceeded."""
    if not cashback.is_positive() or cashback.amount_minor > promotion.remaining_minor:
        raise ValueError("cashback must be positive and within the remaining budget")
    return replace(promotion, spent=promotion.spent + cashback)


def end_promotion_at(promotion: Promotion, now: datetime) -> Promotion:
    """End it now; a promotion that has already ended stays as it is."""
    if promotion.status_at(now) is PromotionStatus.ENDED:
        return promotion
    return replace(promotion, ended_at=now)


def validate_promotion_terms(
    *,
    display_name: str,
    cashback_basis_points: int,
    max_cashback_per_payment: Money,
    budget: Money,
    min_payment_amount: Money | None,
    start_time: datetime,
    end_time: datetime,
    now: datetime,
) -> None:
    """Refuse terms that cannot make a working promotion, naming every bad request field."""
    problems: list[FieldViolation] = []
    if not display_name.strip():
        problems.append(FieldViolation("display_name", "required"))
    elif len(display_name) > MAX_PROMOTION_NAME_LENGTH:
        problems.append(
            FieldViolation("display_name", f"at most {MAX_PROMOTION_NAME_LENGTH} characters")
        )
    if not 1 <= cashback_basis_points <= BASIS_POINTS_PER_WHOLE:
        problems.append(FieldViolation("cashback_basis_points", "must be 1 to 10000"))
    money_fields = [
        ("max_cashback_per_payment", max_cashback_per_payment),
        ("budget", budget),
    ]
    if min_payment_amount is not None:
        money_fields.append(("min_payment_amount", min_payment_amount))
    for name, money in money_fields:
        if not money.is_positive():
            problems.append(FieldViolation(f"{name}.amount_minor", "must be positive"))
        if money.currency != budget.currency:
            problems.append(
                FieldViolation(f"{name}.currency_code", "must be the budget's currency")
            )
    if end_time <= start_time:
        problems.append(FieldViolation("end_time", "must be after start_time"))
    elif end_time <= now:
        problems.append(FieldViolation("end_time", "must be in the future"))
    if problems:
        raise InvalidArgument(
            "; ".join(f"{p.field}: {p.description}" for p in problems),
            violations=tuple(problems),
        )
