"""RPCs of batch, mixed into the service classes."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio
from wallet.v1 import partner_pb2

from wallet_server import services
from wallet_server.domain import FieldViolation, InvalidArgument, id_text
from wallet_server.transport._mapping import (
    collect,
    parse_amount,
    parse_request_id,
    parse_text,
    parse_uuid,
    write_transaction,
)
from wallet_server.transport.servicers._deps import Servicers, partner_caller

Context = aio.ServicerContext[Any, Any]

MAX_ITEM_MEMO_LENGTH = 200  # TransferItem.memo

# Items parsed or answered between two looks at the event loop. A 1000-item batch takes
# about ten milliseconds each way; meanwhile another batch, holding its account locks, may
# be ready to go on, and every batch waiting for those locks waits with it.
_ITEMS_PER_TURN = 100


def _parse_item(item: partner_pb2.TransferItem, request_id: Any) -> services.BatchTransfer:
    """Parse one item; a malformed one becomes an item that fails on its own."""
    try:  # the usual case, at a third of the cost of collecting every violation
        return services.BatchTransfer(
            request_id=request_id,
            from_account_id=parse_uuid(item.from_account_id, "from_account_id"),
            to_account_id=parse_uuid(item.to_account_id, "to_account_id"),
            amount=parse_amount(item.amount, "amount", present=item.HasField("amount")),
            memo=parse_text(item.memo, "memo", max_length=MAX_ITEM_MEMO_LENGTH),
        )
    except InvalidArgument:
        pass
    parsed: dict[str, Any] = {}
    try:
        collect(
            lambda: parsed.setdefault(
                "from_account_id", parse_uuid(item.from_account_id, "from_account_id")
            ),
            lambda: parsed.setdefault(
                "to_account_id", parse_uuid(item.to_account_id, "to_account_id")
            ),
            lambda: parsed.setdefault(
                "amount", parse_amount(item.amount, "amount", present=item.HasField("amount"))
            ),
            lambda: parsed.setdefault(
                "memo", parse_text(item.memo, "memo", max_length=MAX_ITEM_MEMO_LENGTH)
            ),
        )
    except InvalidArgument as exc:
        return services.BatchTransfer(
            request_id=request_id,
            from_account_id=None,
            to_account_id=None,
            amount=None,
            memo="",
            invalid=exc.message,
        )
    return services.BatchTransfer(request_id=request_id, **parsed)


def _write_result(message: partner_pb2.TransferResult, result: services.BatchItemResult) -> None:
    message.request_id = id_text(result.request_id)
    if result.transaction is not None:
        write_transaction(message.transaction, result.transaction)
        return
    assert result.error is not None
    message.error.CopyFrom(
        partner_pb2.TransferError(
            reason=result.error.reason, message=result.error.message, code=result.error.code
        )
    )


class BatchPartner:
    _deps: Servicers

    async def CreateTransfers(
        self, request: partner_pb2.CreateTransfersRequest, context: Context
    ) -> partner_pb2.CreateTransfersResponse:
        # Checked before parsing anything: an oversized batch costs nothing.
        services.check_batch_size(len(request.transfers))
        caller = partner_caller()
        # Held while parsing too: a waiting batch's parsed items are most of its memory.
        with self._deps.batches.admit(caller.key):
            violations: list[FieldViolation] = []
            batch_request_id = None
            try:
                batch_request_id = parse_request_id(request.request_id)
            except InvalidArgument as exc:
                violations.extend(exc.violations)
            items: list[services.BatchTransfer] = []
            for index, item in enumerate(request.transfers):
                if index % _ITEMS_PER_TURN == _ITEMS_PER_TURN - 1:
                    await asyncio.sleep(0)
                try:
                    item_request_id = parse_uuid(item.request_id, f"transfers[{index}].request_id")
                except InvalidArgument as exc:
                    violations.extend(exc.violations)
                    continue
                items.append(_parse_item(item, item_request_id))
            if violations or batch_request_id is None:
                raise InvalidArgument(
                    "; ".join(f"{v.field}: {v.description}" for v in violations),
                    violations=tuple(violations),
                )
            result = await self._deps.batches.create_transfers(
                services.CreateTransfers(
                    caller=caller,
                    request_id=batch_request_id,
                    transfers=tuple(items),
                    atomic=request.atomic,
                )
            )
            response = partner_pb2.CreateTransfersResponse()
            add_result = response.results.add
            for index, r in enumerate(result.results):
                if index % _ITEMS_PER_TURN == _ITEMS_PER_TURN - 1:
                    await asyncio.sleep(0)
                _write_result(add_result(), r)
            return response
