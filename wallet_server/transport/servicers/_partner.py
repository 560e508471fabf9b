"""PartnerService: partner back ends over mutual TLS."""

from __future__ import annotations

from typing import Any

from grpc import aio
from wallet.v1 import partner_pb2, partner_pb2_grpc

from wallet_server import services
from wallet_server.transport._mapping import (
    account_to_proto,
    collect,
    decode_currency_token,
    encode_page_token,
    parse_amount,
    parse_page_size,
    parse_request_id,
    parse_text,
    parse_uuid,
    transaction_to_proto,
)
from wallet_server.transport.servicers._batch import BatchPartner
from wallet_server.transport.servicers._deps import Servicers, partner_caller
from wallet_server.transport.servicers._orders import OrdersPartner
from wallet_server.transport.servicers._streams import StreamsPartner
from wallet_server.transport.servicers._withdrawals import WithdrawalsPartner

Context = aio.ServicerContext[Any, Any]


class PartnerServicer(
    WithdrawalsPartner,
    OrdersPartner,
    BatchPartner,
    StreamsPartner,
    partner_pb2_grpc.PartnerServiceServicer,
):
    def __init__(self, deps: Servicers) -> None:
        self._deps = deps

    async def Deposit(
        self, request: partner_pb2.DepositRequest, context: Context
    ) -> partner_pb2.DepositResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault("account_id", parse_uuid(request.account_id, "account_id")),
            lambda: parsed.setdefault(
                "amount", parse_amount(request.amount, "amount", present=request.HasField("amount"))
            ),
            lambda: parsed.setdefault(
                "external_reference",
                parse_text(request.external_reference, "external_reference", max_length=200),
            ),
        )
        tx = await self._deps.movements.deposit(services.Deposit(caller=partner_caller(), **parsed))
        return partner_pb2.DepositResponse(transaction=transaction_to_proto(tx))

    async def ListSettlementAccounts(
        self, request: partner_pb2.ListSettlementAccountsRequest, context: Context
    ) -> partner_pb2.ListSettlementAccountsResponse:
        caller = partner_caller()
        scope = f"settlement:{caller.partner_id}"
        page_size = parse_page_size(request.page_size)
        after = decode_currency_token(request.page_token, scope)
        page = await services.list_settlement_accounts(
            services.ListSettlementAccounts(
                caller=caller, page_size=page_size, after_currency=after
            ),
            self._deps.uow(),
        )
        token = (
            ""
            if page.next_after_currency is None
            else encode_page_token(scope, page.next_after_currency)
        )
        return partner_pb2.ListSettlementAccountsResponse(
            accounts=[account_to_proto(a) for a in page.accounts], next_page_token=token
        )
