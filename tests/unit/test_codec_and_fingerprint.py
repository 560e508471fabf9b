"""Replays return the same value; the idempotency fingerprint ignores only the key and caller."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    Money,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
)
from wallet_server.services import Transfer
from wallet_server.services._codec import decode_as, encode
from wallet_server.services._idempotency import fingerprint


@given(
    amount=st.integers(min_value=1, max_value=2**63 - 1),
    memo=st.text(max_size=50),
    posted=st.booleans(),
)
def test_transaction_survives_the_json_round_trip(amount: int, memo: str, posted: bool) -> None:
    created = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    tx = Transaction(
        transaction_id=uuid4(),
        kind=TransactionKind.TRANSFER,
        status=TransactionStatus.POSTED,
        amount=Money("KWD", amount),
        from_account_id=uuid4(),
        to_account_id=None,
        memo=memo,
        external_reference="",
        created_at=created,
        posted_at=created if posted else None,
        postings=(Posting(uuid4(), -amount), Posting(uuid4(), amount)),
    )
    assert decode_as(Transaction, encode(tx)) == tx


def _transfer(**overrides: object) -> Transfer:
    values: dict[str, object] = {
        "caller": UserPrincipal(uuid4(), uuid4()),
        "request_id": uuid4(),
        "from_account_id": uuid4(),
        "to_account_id": uuid4(),
        "to_username": None,
        "amount": Money("USD", 100),
        "memo": "",
    }
    values.update(overrides)
    return Transfer(**values)  # type: ignore[arg-type]


def test_fingerprint_ignores_request_id_and_caller_but_nothing_else() -> None:
    base = _transfer()
    same = _transfer(from_account_id=base.from_account_id, to_account_id=base.to_account_id)
    assert fingerprint("Transfer", base) == fingerprint("Transfer", same)
    for change in (
        {"amount": Money("USD", 101)},
        {"amount": Money("EUR", 100)},
        {"memo": "x"},
        {"to_account_id": uuid4()},
    ):
        other = _transfer(
            from_account_id=base.from_account_id,
            **{"to_account_id": base.to_account_id, **change},
        )
        assert fingerprint("Transfer", other) != fingerprint("Transfer", base), change
    assert fingerprint("Deposit", base) != fingerprint("Transfer", base)
