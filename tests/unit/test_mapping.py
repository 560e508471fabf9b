"""Request parsing at the edge: field-level violations and opaque page tokens."""

from __future__ import annotations

import pytest
from wallet.v1 import ledger_pb2

from wallet_server.domain import InvalidArgument
from wallet_server.transport._mapping import (
    MAX_PAGE_SIZE,
    collect,
    decode_page_token,
    encode_page_token,
    parse_amount,
    parse_page_size,
    parse_uuid,
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
