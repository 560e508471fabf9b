"""RPCs of verification, mixed into the service classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpc import aio
from wallet.v1 import admin_pb2

from wallet_server import services
from wallet_server.domain import LedgerInvariant, LedgerViolation
from wallet_server.transport._mapping import money_to_proto, timestamp
from wallet_server.transport.servicers._deps import Servicers, operator_caller

Context = aio.ServicerContext[Any, Any]

_INVARIANT_TO_PROTO: Mapping[LedgerInvariant, int] = {
    LedgerInvariant.BALANCED_POSTINGS: admin_pb2.LEDGER_INVARIANT_BALANCED_POSTINGS,
    LedgerInvariant.POSTED_BALANCE: admin_pb2.LEDGER_INVARIANT_POSTED_BALANCE,
    LedgerInvariant.PENDING_BALANCE: admin_pb2.LEDGER_INVARIANT_PENDING_BALANCE,
    LedgerInvariant.NON_NEGATIVE: admin_pb2.LEDGER_INVARIANT_NON_NEGATIVE,
    LedgerInvariant.HASH_CHAIN: admin_pb2.LEDGER_INVARIANT_HASH_CHAIN,
    LedgerInvariant.POSTINGS_MATCH_STATUS: admin_pb2.LEDGER_INVARIANT_POSTINGS_MATCH_STATUS,
    LedgerInvariant.SINGLE_REVERSAL: admin_pb2.LEDGER_INVARIANT_SINGLE_REVERSAL,
    LedgerInvariant.POSTINGS_MATCH_TRANSACTION: (
        admin_pb2.LEDGER_INVARIANT_POSTINGS_MATCH_TRANSACTION
    ),
    LedgerInvariant.BALANCE_IN_RANGE: admin_pb2.LEDGER_INVARIANT_BALANCE_IN_RANGE,
}


def violation_to_proto(violation: LedgerViolation) -> admin_pb2.LedgerViolation:
    message = admin_pb2.LedgerViolation(
        invariant=_INVARIANT_TO_PROTO[violation.invariant],  # type: ignore[arg-type]
        account_id=str(violation.account_id or ""),
        transaction_id=str(violation.transaction_id or ""),
        description=violation.description,
    )
    if violation.expected is not None:
        message.expected.CopyFrom(money_to_proto(violation.expected))
    if violation.actual is not None:
        message.actual.CopyFrom(money_to_proto(violation.actual))
    return message


class VerificationAdmin:
    _deps: Servicers

    async def VerifyLedger(
        self, request: admin_pb2.VerifyLedgerRequest, context: Context
    ) -> admin_pb2.VerifyLedgerResponse:
        report = await services.verify_ledger(
            services.VerifyLedger(caller=operator_caller()), self._deps.uow()
        )
        return admin_pb2.VerifyLedgerResponse(
            violations=[violation_to_proto(v) for v in report.violations],
            accounts_checked=report.accounts_checked,
            transactions_checked=report.transactions_checked,
            verify_time=timestamp(report.verified_at),
        )
