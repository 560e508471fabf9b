"""RPCs of reversals, mixed into the service classes."""

from __future__ import annotations

from typing import Any

from grpc import aio
from wallet.v1 import admin_pb2

from wallet_server import services
from wallet_server.transport._mapping import (
    collect,
    parse_request_id,
    parse_text,
    parse_uuid,
    transaction_to_proto,
)
from wallet_server.transport.servicers._deps import Servicers, operator_caller

Context = aio.ServicerContext[Any, Any]

# ReverseTransactionRequest.reason: required, stored as the reversal's memo.
MAX_REVERSAL_REASON_LENGTH = 200


class ReversalsAdmin:
    _deps: Servicers

    async def ReverseTransaction(
        self, request: admin_pb2.ReverseTransactionRequest, context: Context
    ) -> admin_pb2.ReverseTransactionResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "transaction_id", parse_uuid(request.transaction_id, "transaction_id")
            ),
            lambda: parsed.setdefault(
                "reason",
                parse_text(
                    request.reason, "reason", max_length=MAX_REVERSAL_REASON_LENGTH, required=True
                ),
            ),
        )
        tx = await services.reverse_transaction(
            services.ReverseTransaction(caller=operator_caller(), **parsed), self._deps.uow()
        )
        return admin_pb2.ReverseTransactionResponse(transaction=transaction_to_proto(tx))
