"""RPCs of withdrawals, mixed into the service classes."""

from __future__ import annotations

from typing import Any

from grpc import aio
from wallet.v1 import ledger_pb2, partner_pb2, wallet_pb2

from wallet_server import services
from wallet_server.domain import InvalidArgument, PayoutDestination, parse_payout_destination
from wallet_server.transport._mapping import (
    collect,
    parse_amount,
    parse_request_id,
    parse_text,
    parse_uuid,
    transaction_to_proto,
)
from wallet_server.transport.servicers._deps import Servicers, partner_caller, user_caller

Context = aio.ServicerContext[Any, Any]

MAX_PAYOUT_REFERENCE_LENGTH = 128
MAX_FAILURE_MESSAGE_LENGTH = 200


def parse_destination(request: wallet_pb2.RequestWithdrawalRequest) -> PayoutDestination:
    if not request.HasField("destination"):
        raise InvalidArgument.for_field("destination", "required")
    d = request.destination
    return parse_payout_destination(
        holder_name=d.holder_name,
        country_code=d.country_code,
        bank_code=d.bank_code,
        account_number=d.account_number,
        field="destination",
    )


def payout_destination_to_proto(destination: PayoutDestination) -> ledger_pb2.PayoutDestination:
    return ledger_pb2.PayoutDestination(
        holder_name=destination.holder_name,
        country_code=destination.country_code,
        bank_code=destination.bank_code,
        account_number=destination.account_number,
    )


class WithdrawalsWallet:
    _deps: Servicers

    async def RequestWithdrawal(
        self, request: wallet_pb2.RequestWithdrawalRequest, context: Context
    ) -> wallet_pb2.RequestWithdrawalResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault("account_id", parse_uuid(request.account_id, "account_id")),
            lambda: parsed.setdefault(
                "amount", parse_amount(request.amount, "amount", present=request.HasField("amount"))
            ),
            lambda: parsed.setdefault("destination", parse_destination(request)),
        )
        # device_signature: step-up is not enforced yet (and is never part of the payload).
        tx = await services.request_withdrawal(
            services.RequestWithdrawal(caller=user_caller(), **parsed),
            self._deps.uow(),
            self._deps.secrets,
        )
        return wallet_pb2.RequestWithdrawalResponse(transaction=transaction_to_proto(tx))


class WithdrawalsPartner:
    _deps: Servicers

    async def CompleteWithdrawal(
        self, request: partner_pb2.CompleteWithdrawalRequest, context: Context
    ) -> partner_pb2.CompleteWithdrawalResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "transaction_id", parse_uuid(request.transaction_id, "transaction_id")
            ),
            lambda: parsed.setdefault(
                "external_reference",
                parse_text(
                    request.external_reference,
                    "external_reference",
                    max_length=MAX_PAYOUT_REFERENCE_LENGTH,
                ),
            ),
        )
        tx = await services.complete_withdrawal(
            services.CompleteWithdrawal(caller=partner_caller(), **parsed), self._deps.uow()
        )
        return partner_pb2.CompleteWithdrawalResponse(transaction=transaction_to_proto(tx))

    async def FailWithdrawal(
        self, request: partner_pb2.FailWithdrawalRequest, context: Context
    ) -> partner_pb2.FailWithdrawalResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "transaction_id", parse_uuid(request.transaction_id, "transaction_id")
            ),
            lambda: parsed.setdefault(
                "failure_message",
                parse_text(
                    request.failure_message,
                    "failure_message",
                    max_length=MAX_FAILURE_MESSAGE_LENGTH,
                ),
            ),
        )
        tx = await services.fail_withdrawal(
            services.FailWithdrawal(caller=partner_caller(), **parsed), self._deps.uow()
        )
        return partner_pb2.FailWithdrawalResponse(transaction=transaction_to_proto(tx))
