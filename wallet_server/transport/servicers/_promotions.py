"""RPCs of cashback promotions (AdminService), mixed into the service classes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from grpc import aio
from wallet.v1 import admin_pb2

from wallet_server import services
from wallet_server.domain import (
    MAX_PROMOTION_NAME_LENGTH,
    InvalidArgument,
    Promotion,
    PromotionStatus,
)
from wallet_server.transport._mapping import (
    collect,
    decode_keyset_token,
    encode_page_token,
    money_to_proto,
    parse_amount,
    parse_page_size,
    parse_request_id,
    parse_text,
    parse_uuid,
    time_field,
    timestamp,
)
from wallet_server.transport.servicers._deps import Servicers, operator_caller

Context = aio.ServicerContext[Any, Any]

_PAGE_SCOPE = "promotions"
MAX_MERCHANT_NAMES = 100

_STATUS_TO_PROTO: Mapping[PromotionStatus, int] = {
    PromotionStatus.SCHEDULED: admin_pb2.PROMOTION_STATUS_SCHEDULED,
    PromotionStatus.ACTIVE: admin_pb2.PROMOTION_STATUS_ACTIVE,
    PromotionStatus.ENDED: admin_pb2.PROMOTION_STATUS_ENDED,
    PromotionStatus.EXHAUSTED: admin_pb2.PROMOTION_STATUS_EXHAUSTED,
}


def promotion_to_proto(promotion: Promotion, now: datetime) -> admin_pb2.Promotion:
    """The promotion with its status as of ``now``."""
    message = admin_pb2.Promotion(
        promotion_id=str(promotion.promotion_id),
        display_name=promotion.display_name,
        status=_STATUS_TO_PROTO[promotion.status_at(now)],  # type: ignore[arg-type]
        cashback_basis_points=promotion.cashback_basis_points,
        max_cashback_per_payment=money_to_proto(promotion.max_cashback_per_payment),
        budget=money_to_proto(promotion.budget),
        spent=money_to_proto(promotion.spent),
        merchant_names=list(promotion.merchant_names),
        start_time=timestamp(promotion.start_time),
        end_time=timestamp(promotion.end_time),
        funding_account_id=str(promotion.funding_account_id),
        create_time=timestamp(promotion.created_at),
    )
    if promotion.min_payment_amount is not None:
        message.min_payment_amount.CopyFrom(money_to_proto(promotion.min_payment_amount))
    return message


def _merchant_names(values: Any) -> tuple[str, ...]:
    if len(values) > MAX_MERCHANT_NAMES:
        raise InvalidArgument.for_field("merchant_names", f"at most {MAX_MERCHANT_NAMES} names")
    return tuple(
        parse_text(name, f"merchant_names[{i}]", max_length=200, required=True)
        for i, name in enumerate(values)
    )


class PromotionsAdmin:
    _deps: Servicers

    async def CreatePromotion(
        self, request: admin_pb2.CreatePromotionRequest, context: Context
    ) -> admin_pb2.CreatePromotionResponse:
        parsed: dict[str, Any] = {"min_payment_amount": None}

        def end_time() -> None:
            parsed["end_time"] = time_field(request, "end_time", required=True)

        def min_payment() -> None:
            if request.HasField("min_payment_amount"):
                parsed["min_payment_amount"] = parse_amount(
                    request.min_payment_amount, "min_payment_amount", present=True
                )

        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "display_name",
                parse_text(
                    request.display_name,
                    "display_name",
                    max_length=MAX_PROMOTION_NAME_LENGTH,
                    required=True,
                ),
            ),
            lambda: parsed.setdefault(
                "max_cashback_per_payment",
                parse_amount(
                    request.max_cashback_per_payment,
                    "max_cashback_per_payment",
                    present=request.HasField("max_cashback_per_payment"),
                ),
            ),
            lambda: parsed.setdefault(
                "budget", parse_amount(request.budget, "budget", present=request.HasField("budget"))
            ),
            min_payment,
            lambda: parsed.setdefault("merchant_names", _merchant_names(request.merchant_names)),
            lambda: parsed.setdefault(
                "start_time",
                time_field(request, "start_time"),
            ),
            end_time,
        )
        promotion = await services.create_promotion(
            services.CreatePromotion(
                caller=operator_caller(),
                cashback_basis_points=request.cashback_basis_points,
                **parsed,
            ),
            self._deps.uow(),
        )
        return admin_pb2.CreatePromotionResponse(
            promotion=promotion_to_proto(promotion, self._deps.clock())
        )

    async def GetPromotion(
        self, request: admin_pb2.GetPromotionRequest, context: Context
    ) -> admin_pb2.GetPromotionResponse:
        promotion = await services.get_promotion(
            services.GetPromotion(
                caller=operator_caller(),
                promotion_id=parse_uuid(request.promotion_id, "promotion_id"),
            ),
            self._deps.uow(),
        )
        return admin_pb2.GetPromotionResponse(
            promotion=promotion_to_proto(promotion, self._deps.clock())
        )

    async def ListPromotions(
        self, request: admin_pb2.ListPromotionsRequest, context: Context
    ) -> admin_pb2.ListPromotionsResponse:
        page = await services.list_promotions(
            services.ListPromotions(
                caller=operator_caller(),
                page_size=parse_page_size(request.page_size),
                before=decode_keyset_token(request.page_token, _PAGE_SCOPE),
            ),
            self._deps.uow(),
        )
        now = self._deps.clock()
        token = ""
        if page.next_before is not None:
            created_at, promotion_id = page.next_before
            token = encode_page_token(_PAGE_SCOPE, [created_at.isoformat(), str(promotion_id)])
        return admin_pb2.ListPromotionsResponse(
            promotions=[promotion_to_proto(p, now) for p in page.promotions],
            next_page_token=token,
        )

    async def EndPromotion(
        self, request: admin_pb2.EndPromotionRequest, context: Context
    ) -> admin_pb2.EndPromotionResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "promotion_id", parse_uuid(request.promotion_id, "promotion_id")
            ),
        )
        promotion = await services.end_promotion(
            services.EndPromotion(caller=operator_caller(), **parsed), self._deps.uow()
        )
        return admin_pb2.EndPromotionResponse(
            promotion=promotion_to_proto(promotion, self._deps.clock())
        )
