"""Replays return the same value; stored documents say what the encoding says; the idempotency
fingerprint ignores only the key and caller."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    ALL_PARTNER_SCOPES,
    Account,
    AccountKind,
    EventType,
    LedgerEvent,
    Money,
    Order,
    OrderStatus,
    PartnerPrincipal,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
)
from wallet_server.services import Transfer
from wallet_server.services._codec import decode_as, embedded, encode, fields_of, to_json
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


# Text a stored document can hold: the transport refuses lone surrogates (not printable).
_storable_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=50)


@given(memo=_storable_text, amount=st.integers(min_value=1, max_value=2**63 - 1))
def test_stored_documents_say_what_the_encoding_says(memo: str, amount: int) -> None:
    """to_json (orjson) writes what json.dumps(encode(...)) would: the same objects, ids,
    times, enum values and sets, for every kind of value the server stores."""
    created = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    src, dst = uuid4(), uuid4()
    exchange = Transaction(
        transaction_id=uuid4(),
        kind=TransactionKind.EXCHANGE,
        status=TransactionStatus.POSTED,
        amount=Money("USD", amount),
        from_account_id=src,
        to_account_id=dst,
        memo=memo,
        external_reference=memo[::-1],
        created_at=created,
        posted_at=created.replace(microsecond=0),  # isoformat leaves out zero microseconds
        postings=(Posting(src, -amount), Posting(dst, amount, "EUR")),
        to_amount=Money("EUR", amount),
        exchange_rate="0.9200",
    )
    account = Account(dst, AccountKind.USER, "EUR", uuid4(), None, amount, 0, False, created)
    order = Order(
        order_id=uuid4(),
        partner_id=uuid4(),
        merchant_name=memo,
        amount=Money("USD", amount),
        description="",
        merchant_reference="ref",
        status=OrderStatus.PAID,
        created_at=created.astimezone(timezone(timedelta(hours=-5))),
        # An offset with seconds, as PostgreSQL gives for Amsterdam before 1937.
        expires_at=created.astimezone(timezone(timedelta(minutes=19, seconds=32))),
        paid_at=created,
    )
    event = LedgerEvent(
        EventType.TRANSACTION_CREATED, created, exchange, order, (account,), uuid4()
    )
    partner = PartnerPrincipal(partner_id=uuid4(), name=memo, scopes=ALL_PARTNER_SCOPES)
    for value in (exchange, account, order, event, partner, None):
        assert json.loads(to_json(value)) == json.loads(json.dumps(encode(value)))
    assert json.loads(to_json({"result": exchange})) == {"result": encode(exchange)}
    assert decode_as(LedgerEvent, json.loads(to_json(event))) == event
    # A value serialized once and embedded is written byte for byte as it would be in place.
    shared = embedded(exchange)
    assert to_json({"result": shared}) == to_json({"result": exchange})
    assert to_json(fields_of(event, transaction=shared)) == to_json(event)
    # The same instant in UTC and in another zone keeps its own spelling.
    same_instant = [created, created.astimezone(timezone(timedelta(hours=1))), created]
    assert json.loads(to_json(same_instant)) == [t.isoformat() for t in same_instant]


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
