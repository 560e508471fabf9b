"""Use cases: cashback promotions (优惠活动), managed by operators.

A promotion pays a share of qualifying order payments back to the payer, from the wallet's
PROMOTIONS system account of its currency (a system account: it may go negative), within a
per-payment cap and a total budget. Payments spend the budget (services/_orders.py); here
operators create, read, list and end promotions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from wallet_server.domain import (
    AccountKind,
    InvalidArgument,
    Money,
    NotFound,
    OperatorPrincipal,
    Promotion,
    end_promotion_at,
    validate_promotion_terms,
)
from wallet_server.services._call import note_resources
from wallet_server.services._idempotency import run_once
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

# --- commands and results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatePromotion:
    caller: OperatorPrincipal
    request_id: UUID
    display_name: str
    cashback_basis_points: int
    max_cashback_per_payment: Money
    budget: Money
    min_payment_amount: Money | None
    merchant_names: tuple[str, ...]  # empty: every merchant
    start_time: datetime | None  # None: now
    end_time: datetime


@dataclass(frozen=True, slots=True)
class GetPromotion:
    caller: OperatorPrincipal
    promotion_id: UUID


@dataclass(frozen=True, slots=True)
class ListPromotions:
    caller: OperatorPrincipal
    page_size: int
    before: tuple[datetime, UUID] | None  # (created_at, id) of the last promotion seen


@dataclass(frozen=True, slots=True)
class EndPromotion:
    caller: OperatorPrincipal
    request_id: UUID
    promotion_id: UUID


@dataclass(frozen=True, slots=True)
class PromotionPage:
    promotions: tuple[Promotion, ...]
    next_before: tuple[datetime, UUID] | None  # None: no more


def promotion_not_found(promotion_id: UUID) -> NotFound:
    return NotFound(f"promotion {promotion_id} not found")


# --- use cases ------------------------------------------------------------------------------


@retry_on_conflict
async def create_promotion(cmd: CreatePromotion, uow: UnitOfWork) -> Promotion:
    """A new promotion, funded from the promotions account of its currency."""
    async with uow:

        async def execute() -> Promotion:
            now = uow.now()
            start = cmd.start_time or now
            validate_promotion_terms(
                display_name=cmd.display_name,
                cashback_basis_points=cmd.cashback_basis_points,
                max_cashback_per_payment=cmd.max_cashback_per_payment,
                budget=cmd.budget,
                min_payment_amount=cmd.min_payment_amount,
                start_time=start,
                end_time=cmd.end_time,
                now=now,
            )
            names = tuple(sorted(set(cmd.merchant_names)))
            found = await uow.promotions.partner_ids_by_name(names)
            unknown = [n for n in names if n not in found]
            if unknown:
                raise InvalidArgument.for_field(
                    "merchant_names", f"no registered partner named {', '.join(map(repr, unknown))}"
                )
            currency = cmd.budget.currency
            funding_id = await uow.ledger.ensure_system_account(
                account_id=uow.new_id(), kind=AccountKind.PROMOTIONS, currency=currency
            )
            promotion = Promotion(
                promotion_id=uow.new_id(),
                display_name=cmd.display_name,
                cashback_basis_points=cmd.cashback_basis_points,
                max_cashback_per_payment=cmd.max_cashback_per_payment,
                budget=cmd.budget,
                spent=Money.zero(currency),
                min_payment_amount=cmd.min_payment_amount,
                merchant_partner_ids=tuple(sorted(found[n] for n in names)),
                merchant_names=names,
                start_time=start,
                end_time=cmd.end_time,
                ended_at=None,
                funding_account_id=funding_id,
                created_at=now,
            )
            await uow.promotions.add(promotion)
            return promotion

        promotion = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="CreatePromotion",
            command=cmd,
            result_type=Promotion,
            execute=execute,
        )
        note_resources(promotion.promotion_id)
        await uow.commit()
        return promotion


@retry_on_conflict
async def get_promotion(cmd: GetPromotion, uow: UnitOfWork) -> Promotion:
    async with uow:
        note_resources(cmd.promotion_id)
        promotion = await uow.promotions.get(cmd.promotion_id)
        if promotion is None:
            raise promotion_not_found(cmd.promotion_id)
        return promotion


@retry_on_conflict
async def list_promotions(cmd: ListPromotions, uow: UnitOfWork) -> PromotionPage:
    """Newest first, a page at a time."""
    async with uow:
        rows = await uow.promotions.page(before=cmd.before, limit=cmd.page_size + 1)
        page = tuple(rows[: cmd.page_size])
        more = len(rows) > cmd.page_size
        last = page[-1] if page else None
        return PromotionPage(
            promotions=page,
            next_before=(last.created_at, last.promotion_id) if more and last else None,
        )


@retry_on_conflict
async def end_promotion(cmd: EndPromotion, uow: UnitOfWork) -> Promotion:
    """End a promotion: payments from now on earn nothing from it. Ending it again is a no-op."""
    async with uow:

        async def execute() -> Promotion:
            # The row lock orders this after any payment spending from it right now.
            promotion = await uow.promotions.lock(cmd.promotion_id)
            if promotion is None:
                raise promotion_not_found(cmd.promotion_id)
            ended = end_promotion_at(promotion, uow.now())
            if ended != promotion:
                await uow.promotions.save(ended)
            return ended

        note_resources(cmd.promotion_id)
        promotion = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="EndPromotion",
            command=cmd,
            result_type=Promotion,
            execute=execute,
        )
        await uow.commit()
        return promotion


__all__ = [
    "CreatePromotion",
    "EndPromotion",
    "GetPromotion",
    "ListPromotions",
    "PromotionPage",
    "create_promotion",
    "end_promotion",
    "get_promotion",
    "list_promotions",
    "promotion_not_found",
]
