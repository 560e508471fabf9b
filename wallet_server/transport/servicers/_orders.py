"""RPCs of merchant orders, mixed into the service classes.

WalletService: GetMerchantOrder, PayOrder. PartnerService: CreateOrder, GetOrder, RefundPayment.
"""

from __future__ import annotations

from typing import Any

from grpc import aio
from wallet.v1 import partner_pb2, wallet_pb2

from wallet_server import services
from wallet_server.domain import (
    MAX_MERCHANT_REFERENCE_LENGTH,
    MAX_ORDER_DESCRIPTION_LENGTH,
    InvalidArgument,
)
from wallet_server.transport._mapping import (
    collect,
    order_to_proto,
    parse_amount,
    parse_request_id,
    parse_text,
    parse_time,
    parse_uuid,
    transaction_to_proto,
)
from wallet_server.transport.servicers._deps import Servicers, partner_caller, user_caller

Context = aio.ServicerContext[Any, Any]

MAX_REFUND_REASON_LENGTH = 200
# Durations beyond this are refused by the 7-day rule anyway; the bound keeps the arithmetic
# far from datetime's range.
_MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


def _expiration(request: partner_pb2.CreateOrderRequest, parsed: dict[str, Any]) -> None:
    which = request.WhichOneof("expiration")
    if which == "expire_time":
        parsed["expire_time"] = parse_time(request.expire_time, "expire_time", present=True)
    elif which == "ttl":
        seconds, nanos = request.ttl.seconds, request.ttl.nanos
        if not -_MAX_TTL_SECONDS <= seconds <= _MAX_TTL_SECONDS:
            raise InvalidArgument.for_field("ttl", "at most 7 days")
        parsed["ttl_microseconds"] = seconds * 1_000_000 + nanos // 1_000


class OrdersWallet:
    _deps: Servicers

    async def GetMerchantOrder(
        self, request: wallet_pb2.GetMerchantOrderRequest, context: Context
    ) -> wallet_pb2.GetMerchantOrderResponse:
        order = await services.get_merchant_order(
            services.GetMerchantOrder(
                caller=user_caller(), order_id=parse_uuid(request.order_id, "order_id")
            ),
            self._deps.uow(),
        )
        return wallet_pb2.GetMerchantOrderResponse(order=order_to_proto(order))

    async def PayOrder(
        self, request: wallet_pb2.PayOrderRequest, context: Context
    ) -> wallet_pb2.PayOrderResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault("order_id", parse_uuid(request.order_id, "order_id")),
            lambda: parsed.setdefault(
                "from_account_id", parse_uuid(request.from_account_id, "from_account_id")
            ),
        )
        result = await services.pay_order(
            services.PayOrder(caller=user_caller(), **parsed), self._deps.uow()
        )
        response = wallet_pb2.PayOrderResponse(
            transaction=transaction_to_proto(result.transaction),
            order=order_to_proto(result.order),
        )
        if result.cashback_transaction is not None:
            response.cashback_transaction.CopyFrom(
                transaction_to_proto(result.cashback_transaction)
            )
        return response


class OrdersPartner:
    _deps: Servicers

    async def CreateOrder(
        self, request: partner_pb2.CreateOrderRequest, context: Context
    ) -> partner_pb2.CreateOrderResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "amount", parse_amount(request.amount, "amount", present=request.HasField("amount"))
            ),
            lambda: parsed.setdefault(
                "description",
                parse_text(
                    request.description, "description", max_length=MAX_ORDER_DESCRIPTION_LENGTH
                ),
            ),
            lambda: parsed.setdefault(
                "merchant_reference",
                parse_text(
                    request.merchant_reference,
                    "merchant_reference",
                    max_length=MAX_MERCHANT_REFERENCE_LENGTH,
                ),
            ),
            lambda: _expiration(request, parsed),
        )
        order = await services.create_order(
            services.CreateOrder(caller=partner_caller(), **parsed), self._deps.uow()
        )
        return partner_pb2.CreateOrderResponse(order=order_to_proto(order))

    async def GetOrder(
        self, request: partner_pb2.GetOrderRequest, context: Context
    ) -> partner_pb2.GetOrderResponse:
        order = await services.get_order(
            services.GetOrder(
                caller=partner_caller(), order_id=parse_uuid(request.order_id, "order_id")
            ),
            self._deps.uow(),
        )
        return partner_pb2.GetOrderResponse(order=order_to_proto(order))

    async def RefundPayment(
        self, request: partner_pb2.RefundPaymentRequest, context: Context
    ) -> partner_pb2.RefundPaymentResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault("order_id", parse_uuid(request.order_id, "order_id")),
            lambda: parsed.setdefault(
                "amount", parse_amount(request.amount, "amount", present=request.HasField("amount"))
            ),
            lambda: parsed.setdefault(
                "reason", parse_text(request.reason, "reason", max_length=MAX_REFUND_REASON_LENGTH)
            ),
        )
        result = await services.refund_payment(
            services.RefundPayment(caller=partner_caller(), **parsed), self._deps.uow()
        )
        return partner_pb2.RefundPaymentResponse(
            transaction=transaction_to_proto(result.transaction),
            order=order_to_proto(result.order),
        )
