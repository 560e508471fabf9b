"""WalletService.GetStatement over TLS: a consistent statement, pages, and its errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc import aio
from wallet.v1 import ledger_pb2, wallet_pb2

from tests.e2e.conftest import Wallet
from tests.e2e.errors import rich_error


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def header(statement: wallet_pb2.Statement) -> tuple[object, ...]:
    return (
        statement.account_id,
        statement.currency_code,
        statement.start_time.ToDatetime(),
        statement.end_time.ToDatetime(),
        statement.opening_balance.amount_minor,
        statement.closing_balance.amount_minor,
        statement.total_credits.amount_minor,
        statement.total_debits.amount_minor,
    )


async def test_statement_pages_are_consistent(wallet: Wallet) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    for amount in (1_000, 200, 30):
        await wallet.deposit(a, amount)
    await wallet.wallet.Transfer(
        wallet_pb2.TransferRequest(
            request_id=str(uuid.uuid4()),
            from_account_id=a,
            to_account_id=b,
            amount=ledger_pb2.Money(currency_code="USD", amount_minor=450),
        ),
        metadata=alice,
    )
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(days=1)  # the end means "now"

    pages: list[wallet_pb2.GetStatementResponse] = []
    token = ""
    while True:
        page = await wallet.wallet.GetStatement(
            wallet_pb2.GetStatementRequest(
                account_id=a, start_time=ts(start), end_time=ts(end), page_size=3, page_token=token
            ),
            metadata=alice,
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break

    assert len(pages) == 2
    assert len({header(p.statement) for p in pages}) == 1
    statement = pages[0].statement
    entries = [e for p in pages for e in p.statement.entries]
    assert [e.amount.amount_minor for e in entries] == [1_000, 200, 30, -450]
    assert [e.balance_after.amount_minor for e in entries] == [1_000, 1_200, 1_230, 780]
    assert statement.opening_balance.amount_minor == 0
    assert statement.closing_balance.amount_minor == 780
    assert (statement.total_credits.amount_minor, statement.total_debits.amount_minor) == (
        1_230,
        450,
    )
    assert statement.end_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
    assert entries[3].transaction.kind == ledger_pb2.TRANSACTION_KIND_TRANSFER
    assert not statement.HasField("checkpoint")  # signed checkpoints come later

    # The token belongs to this account and period.
    other = await wallet.open_account(alice, "EUR")
    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.GetStatement(
            wallet_pb2.GetStatementRequest(
                account_id=other,
                start_time=ts(start),
                end_time=ts(end),
                page_token=pages[0].next_page_token,
            ),
            metadata=alice,
        )
    err = rich_error(caught.value)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert list(err.violations) == ["page_token"]


@pytest.mark.parametrize(
    ("case", "code", "reason", "fields"),
    [
        ("foreign", grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
        ("unknown", grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
        (
            "no_times",
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            ["start_time", "end_time"],
        ),
        ("reversed", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["end_time"]),
        ("bad_token", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["page_token"]),
    ],
)
async def test_statement_errors(
    wallet: Wallet, case: str, code: grpc.StatusCode, reason: str, fields: list[str]
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(b, 100)
    now = datetime.now(UTC)
    request = wallet_pb2.GetStatementRequest(
        account_id=a, start_time=ts(now - timedelta(days=1)), end_time=ts(now)
    )
    if case == "foreign":
        request.account_id = b
    elif case == "unknown":
        request.account_id = str(uuid.uuid4())
    elif case == "no_times":
        request.ClearField("start_time")
        request.ClearField("end_time")
    elif case == "reversed":
        request.end_time.CopyFrom(request.start_time)
    else:
        request.page_token = "bm90LWEtdG9rZW4"

    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.GetStatement(request, metadata=alice)

    err = rich_error(caught.value)
    assert (err.code, err.reason, err.domain) == (code, reason, "wallet.v1")
    assert sorted(err.violations) == sorted(fields)
