"""AdminService: operators over mutual TLS with an admin certificate."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2
from grpc import aio
from wallet.v1 import admin_pb2, admin_pb2_grpc

from wallet_server import services
from wallet_server.transport._mapping import (
    decode_sequence_token,
    encode_page_token,
    parse_page_size,
    timestamp,
)
from wallet_server.transport.servicers._deps import Servicers, operator_caller
from wallet_server.transport.servicers._exchange import ExchangeAdmin
from wallet_server.transport.servicers._promotions import PromotionsAdmin
from wallet_server.transport.servicers._reversals import ReversalsAdmin
from wallet_server.transport.servicers._verification import VerificationAdmin

Context = aio.ServicerContext[Any, Any]


def _duration(microseconds: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(microseconds=microseconds))
    return duration


class AdminServicer(
    PromotionsAdmin,
    ExchangeAdmin,
    ReversalsAdmin,
    VerificationAdmin,
    admin_pb2_grpc.AdminServiceServicer,
):
    def __init__(self, deps: Servicers) -> None:
        self._deps = deps

    async def GetAuditLog(
        self, request: admin_pb2.GetAuditLogRequest, context: Context
    ) -> admin_pb2.GetAuditLogResponse:
        position = decode_sequence_token(request.page_token, "audit")
        page = await services.get_audit_log(
            services.GetAuditLog(
                caller=operator_caller(),
                page_size=parse_page_size(request.page_size),
                before_seq=position,
            ),
            self._deps.uow(),
        )
        return admin_pb2.GetAuditLogResponse(
            entries=[
                admin_pb2.AuditEntry(
                    sequence=e.sequence,
                    time=timestamp(e.occurred_at),
                    principal=e.principal,
                    method=e.method,
                    resource_ids=list(e.resource_ids),
                    code=e.code,
                    latency=_duration(e.latency_us),
                    peer=e.peer,
                    request_id=e.request_id,
                    hash=e.hash.hex() if e.hash else "",
                )
                for e in page.entries
            ],
            next_page_token=""
            if page.next_before_seq is None
            else encode_page_token("audit", page.next_before_seq),
        )
