"""Request parsing at the edge: field-level violations and opaque page tokens."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from google.protobuf import timestamp_pb2
from wallet.v1 import ledger_pb2, partner_pb2

from wallet_server.domain import (
    InvalidArgument,
    Money,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
    id_text,
    optional_id_text,
)
from wallet_server.transport._mapping import (
    MAX_PAGE_SIZE,
    collect,
    decode_keyset_token,
    decode_page_token,
    decode_sequence_token,
    encode_page_token,
    parse_amount,
    parse_page_size,
    parse_time,
    parse_uuid,
    timestamp,
    transaction_to_proto,
    write_transaction,
)


def test_page_tokens_round_trip_and_are_bound_to_their_listing() -> None:
    token = encode_page_token("tx:alice:acct1", 42)
    assert decode_page_token(token, "tx:alice:acct1") == 42
    assert decode_page_token("", "tx:alice:acct1") is None
    for bad_scope_or_token in (("tx:bob:acct1", token), ("tx:alice:acct1", "garbage!")):
        scope, bad = bad_scope_or_token
        with pytest.raises(InvalidArgument) as caught:
            decode_page_token(bad, scope)
        assert caught.value.violations[0].field == "page_token"


def test_page_size_defaults_caps_and_refuses_negative() -> None:
    assert parse_page_size(0) == 50
    assert parse_page_size(5) == 5
    assert parse_page_size(10**6) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        parse_page_size(-1)


def test_collect_reports_every_violation_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        collect(
            lambda: parse_uuid("nope", "from_account_id"),
            lambda: parse_uuid("", "to_account_id"),
            lambda: parse_amount(ledger_pb2.Money(), "amount", present=False),
        )
    assert [v.field for v in caught.value.violations] == [
        "from_account_id",
        "to_account_id",
        "amount",
    ]


def _forged(scope: str, position: object) -> str:
    raw = json.dumps({"v": 1, "s": scope, "p": position}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "position", [True, 1.5, "7", [7], {"0": 1}, -3, 0, 2**63, 2**70, -(2**63), None]
)
def test_forged_sequence_positions_are_invalid_argument(position: object) -> None:
    token = _forged("audit", position)
    if position is None:
        assert decode_sequence_token(token, "audit") is None
        return
    with pytest.raises(InvalidArgument):
        decode_sequence_token(token, "audit")


@pytest.mark.parametrize(
    "position", [{"0": "x"}, ["2026-01-01T00:00:00+00:00"], ["nope", "x"], [1, 2], "ab"]
)
def test_forged_keyset_positions_are_invalid_argument(position: object) -> None:
    with pytest.raises(InvalidArgument):
        decode_keyset_token(_forged("accounts:a", position), "accounts:a")


def test_the_largest_sequence_the_database_holds_is_a_valid_position() -> None:
    assert decode_sequence_token(_forged("audit", 2**63 - 1), "audit") == 2**63 - 1


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253402300800, 0), (-62135596801, 0), (0, -5), (0, 10**9)],
)
def test_timestamps_no_calendar_spells_are_invalid_argument_on_their_field(
    seconds: int, nanos: int
) -> None:
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    with pytest.raises(InvalidArgument) as caught:
        parse_time(ts, "start_time", present=True)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("start_time", "not a valid time")
    ]


def test_timestamps_at_the_calendars_ends_and_absent_ones_parse() -> None:
    first = timestamp_pb2.Timestamp(seconds=-62135596800)
    last = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_000)
    assert parse_time(first, "t", present=True) == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_time(last, "t", present=True) == datetime(
        9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert parse_time(timestamp_pb2.Timestamp(seconds=2**62), "t", present=False) is None


def test_oversized_and_deeply_nested_tokens_are_refused_cleanly() -> None:
    nested = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    for token in ("A" * 10_000, nested[:500], nested):
        with pytest.raises(InvalidArgument):
            decode_page_token(token, "audit")


def test_ids_and_times_read_the_same_from_the_cache_as_computed_afresh() -> None:
    ids = [uuid4() for _ in range(3)]
    for value in ids + ids:  # the second round is answered from the cache
        assert id_text(value) == str(value)
        assert optional_id_text(value) == str(value)
    assert optional_id_text(None) == ""
    aware = datetime(2026, 12, 3, 16, 30, 0, 123456, tzinfo=UTC)
    an_hour_east = datetime(2026, 12, 3, 17, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    for moment in (aware, an_hour_east, aware):
        expected = timestamp_pb2.Timestamp()
        expected.FromDatetime(moment)
        assert timestamp(moment) == expected
    first = timestamp(aware)
    first.seconds += 1  # a caller changing its message must not change the next caller's
    assert timestamp(aware).seconds == first.seconds - 1


def test_a_transaction_is_written_field_by_field_into_any_message() -> None:
    src, dst, order = uuid4(), uuid4(), uuid4()
    created = datetime(2026, 12, 3, 16, 30, 0, 250000, tzinfo=UTC)
    exchange = Transaction(
        transaction_id=uuid4(),
        kind=TransactionKind.EXCHANGE,
        status=TransactionStatus.POSTED,
        amount=Money("USD", 500),
        from_account_id=src,
        to_account_id=dst,
        memo="memo",
        external_reference="ref-1",
        created_at=created,
        posted_at=created + timedelta(seconds=1),
        postings=(Posting(src, -500), Posting(dst, 460, "EUR")),
        order_id=order,
        to_amount=Money("EUR", 460),
        exchange_rate="0.92",
        status_message="done",
    )
    message = transaction_to_proto(exchange)
    assert message.transaction_id == str(exchange.transaction_id)
    assert message.kind == ledger_pb2.TRANSACTION_KIND_EXCHANGE
    assert message.status == ledger_pb2.TRANSACTION_STATUS_POSTED
    assert (message.amount.currency_code, message.amount.amount_minor) == ("USD", 500)
    assert (message.from_account_id, message.to_account_id) == (str(src), str(dst))
    assert (message.memo, message.external_reference) == ("memo", "ref-1")
    assert message.create_time.ToDatetime(tzinfo=UTC) == created
    assert message.post_time.ToDatetime(tzinfo=UTC) == created + timedelta(seconds=1)
    assert [
        (p.account_id, p.amount.currency_code, p.amount.amount_minor) for p in message.postings
    ] == [
        (str(src), "USD", -500),
        (str(dst), "EUR", 460),
    ]
    assert (message.to_amount.currency_code, message.to_amount.amount_minor) == ("EUR", 460)
    assert (message.exchange_rate, message.order_id, message.status_message) == (
        "0.92",
        str(order),
        "done",
    )
    assert message.reverses_transaction_id == message.promotion_id == ""

    pending = replace(exchange, posted_at=None, to_amount=None, order_id=None)
    inside = partner_pb2.TransferResult()
    write_transaction(inside.transaction, pending)  # a field of a larger message
    assert inside.WhichOneof("result") == "transaction"
    assert not inside.transaction.HasField("post_time")
    assert not inside.transaction.HasField("to_amount")
    assert inside.transaction.order_id == ""
    assert inside.transaction.create_time == message.create_time
