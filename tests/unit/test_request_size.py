"""The server's limit on a request's size leaves room for every valid request."""

from __future__ import annotations

import uuid

from wallet.v1 import ledger_pb2, partner_pb2

from wallet_server.services import MAX_BATCH_TRANSFERS
from wallet_server.transport._server import MAX_REQUEST_BYTES
from wallet_server.transport.servicers._batch import MAX_ITEM_MEMO_LENGTH


def _longest_id() -> str:
    return f"urn:uuid:{str(uuid.uuid4()).upper()}"  # the longest spelling parse_uuid takes


def test_the_largest_valid_batch_fits_twice_in_the_request_limit() -> None:
    widest = "😀"  # four bytes in UTF-8, one character to the memo's length check
    item = partner_pb2.TransferItem(
        request_id=_longest_id(),
        from_account_id=_longest_id(),
        to_account_id=_longest_id(),
        amount=ledger_pb2.Money(currency_code="USD", amount_minor=-(2**63)),
        memo=widest * MAX_ITEM_MEMO_LENGTH,
    )
    batch = partner_pb2.CreateTransfersRequest(
        request_id=_longest_id(), transfers=[item] * MAX_BATCH_TRANSFERS, atomic=True
    )

    assert 2 * batch.ByteSize() < MAX_REQUEST_BYTES  # single calls carry far less
