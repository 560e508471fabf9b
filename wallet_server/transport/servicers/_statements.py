"""RPCs of statements, mixed into the service classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from grpc import aio
from wallet.v1 import wallet_pb2

from wallet_server import services
from wallet_server.domain import InvalidArgument
from wallet_server.transport._mapping import (
    collect,
    decode_page_token,
    encode_page_token,
    is_sequence,
    money_to_proto,
    parse_page_size,
    parse_uuid,
    time_field,
    timestamp,
    transaction_to_proto,
)
from wallet_server.transport.servicers._deps import Servicers, user_caller

Context = aio.ServicerContext[Any, Any]


def _bad_token() -> InvalidArgument:
    return InvalidArgument.for_field(
        "page_token", "not a token from this listing (use next_page_token as given)"
    )


def _decode_position(token: str, scope: str) -> services.StatementPosition | None:
    position = decode_page_token(token, scope)
    if position is None:
        return None
    try:
        as_of, after_time, after_posting = position
        if not is_sequence(after_posting):
            raise ValueError
        times = [datetime.fromisoformat(as_of), datetime.fromisoformat(after_time)]
        if any(t.tzinfo is None for t in times):
            raise ValueError
        return services.StatementPosition(
            as_of=times[0], after_time=times[1], after_posting=after_posting
        )
    except (ValueError, TypeError):
        raise _bad_token() from None


def _encode_position(position: services.StatementPosition, scope: str) -> str:
    return encode_page_token(
        scope,
        [position.as_of.isoformat(), position.after_time.isoformat(), position.after_posting],
    )


def statement_to_proto(statement: services.AccountStatement) -> wallet_pb2.Statement:
    # `checkpoint` stays unset until the server signs ledger checkpoints; so do the entries'
    # `ledger_sequence` and `ledger_hash` until posted transactions are hash-chained.
    return wallet_pb2.Statement(
        account_id=str(statement.account_id),
        currency_code=statement.currency,
        start_time=timestamp(statement.start_time),
        end_time=timestamp(statement.end_time),
        opening_balance=money_to_proto(statement.opening_balance),
        closing_balance=money_to_proto(statement.closing_balance),
        total_credits=money_to_proto(statement.total_credits),
        total_debits=money_to_proto(statement.total_debits),
        entries=[
            wallet_pb2.StatementEntry(
                transaction=transaction_to_proto(entry.transaction),
                amount=money_to_proto(entry.amount),
                balance_after=money_to_proto(entry.balance_after),
            )
            for entry in statement.entries
        ],
        create_time=timestamp(statement.created_at),
    )


class StatementsWallet:
    _deps: Servicers

    async def GetStatement(
        self, request: wallet_pb2.GetStatementRequest, context: Context
    ) -> wallet_pb2.GetStatementResponse:
        caller = user_caller()
        parsed: dict[str, Any] = {}

        def required_time(field: str) -> None:
            parsed[field] = time_field(request, field, required=True)

        collect(
            lambda: parsed.setdefault("account_id", parse_uuid(request.account_id, "account_id")),
            lambda: required_time("start_time"),
            lambda: required_time("end_time"),
            lambda: parsed.setdefault("page_size", parse_page_size(request.page_size)),
        )
        account_id: UUID = parsed["account_id"]
        start: datetime = parsed["start_time"]
        end: datetime = parsed["end_time"]
        if end <= start:
            raise InvalidArgument.for_field("end_time", "must be after start_time")
        # The token is bound to the caller, the account and the requested period.
        scope = f"statement:{caller.user_id}:{account_id}:{start.isoformat()}:{end.isoformat()}"
        statement = await services.get_statement(
            services.GetStatement(
                caller=caller,
                account_id=account_id,
                start_time=start,
                end_time=end,
                page_size=parsed["page_size"],
                position=_decode_position(request.page_token, scope),
            ),
            self._deps.uow(),
        )
        return wallet_pb2.GetStatementResponse(
            statement=statement_to_proto(statement),
            next_page_token=""
            if statement.next_position is None
            else _encode_position(statement.next_position, scope),
        )


__all__ = ["StatementsWallet", "statement_to_proto"]
