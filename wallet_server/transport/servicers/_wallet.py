"""WalletService: a signed-in user's accounts and money."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from grpc import aio
from wallet.v1 import wallet_pb2, wallet_pb2_grpc

from wallet_server import services
from wallet_server.domain import (
    InvalidArgument,
    Money,
    TransactionKind,
    parse_currency,
)
from wallet_server.transport._mapping import (
    KIND_FROM_PROTO,
    MAX_MEMO_LENGTH,
    account_to_proto,
    collect,
    decode_keyset_token,
    decode_sequence_token,
    encode_page_token,
    parse_amount,
    parse_page_size,
    parse_request_id,
    parse_text,
    parse_uuid,
    time_field,
    transaction_to_proto,
)
from wallet_server.transport.servicers._deps import Servicers, user_caller
from wallet_server.transport.servicers._exchange import ExchangeWallet
from wallet_server.transport.servicers._orders import OrdersWallet
from wallet_server.transport.servicers._statements import StatementsWallet
from wallet_server.transport.servicers._streams import StreamsWallet
from wallet_server.transport.servicers._withdrawals import WithdrawalsWallet

Context = aio.ServicerContext[Any, Any]


def _kinds(values: Any) -> tuple[TransactionKind, ...]:
    kinds = []
    for value in values:
        if value not in KIND_FROM_PROTO:
            raise InvalidArgument.for_field("kinds", f"unknown transaction kind {value}")
        kinds.append(KIND_FROM_PROTO[value])
    return tuple(kinds)


class WalletServicer(
    WithdrawalsWallet,
    OrdersWallet,
    ExchangeWallet,
    StatementsWallet,
    StreamsWallet,
    wallet_pb2_grpc.WalletServiceServicer,
):
    def __init__(self, deps: Servicers) -> None:
        self._deps = deps

    async def OpenAccount(
        self, request: wallet_pb2.OpenAccountRequest, context: Context
    ) -> wallet_pb2.OpenAccountResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "currency", parse_currency(request.currency_code, field="currency_code")
            ),
        )
        account = await services.open_account(
            services.OpenAccount(caller=user_caller(), **parsed), self._deps.uow()
        )
        return wallet_pb2.OpenAccountResponse(account=account_to_proto(account))

    async def GetAccount(
        self, request: wallet_pb2.GetAccountRequest, context: Context
    ) -> wallet_pb2.GetAccountResponse:
        account = await services.get_account(
            services.GetAccount(
                caller=user_caller(), account_id=parse_uuid(request.account_id, "account_id")
            ),
            self._deps.uow(),
        )
        return wallet_pb2.GetAccountResponse(account=account_to_proto(account))

    async def ListAccounts(
        self, request: wallet_pb2.ListAccountsRequest, context: Context
    ) -> wallet_pb2.ListAccountsResponse:
        caller = user_caller()
        scope = f"accounts:{caller.user_id}"
        page_size = parse_page_size(request.page_size)
        after = decode_keyset_token(request.page_token, scope)
        page = await services.list_accounts(
            services.ListAccounts(caller=caller, page_size=page_size, after=after),
            self._deps.uow(),
        )
        token = ""
        if page.next_after is not None:
            token = encode_page_token(
                scope, [page.next_after[0].isoformat(), str(page.next_after[1])]
            )
        return wallet_pb2.ListAccountsResponse(
            accounts=[account_to_proto(a) for a in page.accounts], next_page_token=token
        )

    async def Transfer(
        self, request: wallet_pb2.TransferRequest, context: Context
    ) -> wallet_pb2.TransferResponse:
        parsed: dict[str, Any] = {"to_account_id": None, "to_username": None}
        destination = request.WhichOneof("destination")

        def parse_destination() -> None:
            if destination == "to_account_id":
                parsed["to_account_id"] = parse_uuid(request.to_account_id, "to_account_id")
            elif destination == "to_username":
                parsed["to_username"] = parse_text(
                    request.to_username, "to_username", max_length=64, required=True
                )
            else:
                raise InvalidArgument.for_field(
                    "to_account_id", "to_account_id or to_username is required"
                )

        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault(
                "from_account_id", parse_uuid(request.from_account_id, "from_account_id")
            ),
            parse_destination,
            lambda: parsed.setdefault(
                "amount", parse_amount(request.amount, "amount", present=request.HasField("amount"))
            ),
            lambda: parsed.setdefault(
                "memo", parse_text(request.memo, "memo", max_length=MAX_MEMO_LENGTH)
            ),
        )
        amount: Money = parsed.pop("amount")
        tx = await self._deps.movements.transfer(
            services.Transfer(caller=user_caller(), amount=amount, **parsed)
        )
        return wallet_pb2.TransferResponse(transaction=transaction_to_proto(tx))

    async def GetTransaction(
        self, request: wallet_pb2.GetTransactionRequest, context: Context
    ) -> wallet_pb2.GetTransactionResponse:
        tx = await services.get_transaction(
            services.GetTransaction(
                caller=user_caller(),
                transaction_id=parse_uuid(request.transaction_id, "transaction_id"),
            ),
            self._deps.uow(),
        )
        return wallet_pb2.GetTransactionResponse(transaction=transaction_to_proto(tx))

    async def ListTransactions(
        self, request: wallet_pb2.ListTransactionsRequest, context: Context
    ) -> wallet_pb2.ListTransactionsResponse:
        caller = user_caller()
        account_id = parse_uuid(request.account_id, "account_id")
        times: dict[str, datetime | None] = {}
        collect(
            lambda: times.setdefault("start", time_field(request, "start_time")),
            lambda: times.setdefault("end", time_field(request, "end_time")),
        )
        start, end = times["start"], times["end"]
        if start is not None and end is not None and end <= start:
            raise InvalidArgument.for_field("end_time", "must be after start_time")
        kinds = _kinds(request.kinds)
        # The token is bound to the account and the filters it was issued for.
        scope = (
            f"tx:{caller.user_id}:{account_id}:{start}:{end}:"
            f"{','.join(sorted(k.value for k in kinds))}"
        )
        position = decode_sequence_token(request.page_token, scope)
        page = await services.list_transactions(
            services.ListTransactions(
                caller=caller,
                account_id=account_id,
                page_size=parse_page_size(request.page_size),
                before_seq=position,
                start_time=start,
                end_time=end,
                kinds=kinds,
            ),
            self._deps.uow(),
        )
        token = (
            "" if page.next_before_seq is None else encode_page_token(scope, page.next_before_seq)
        )
        return wallet_pb2.ListTransactionsResponse(
            transactions=[transaction_to_proto(t) for t in page.transactions],
            next_page_token=token,
        )
