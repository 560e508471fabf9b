"""The first money path end to end over TLS: sign up, open, top up, transfer, history."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable

import grpc
import pytest
from grpc import aio
from wallet.v1 import admin_pb2, ledger_pb2, partner_pb2, wallet_pb2

from tests.e2e.conftest import Wallet
from tests.e2e.errors import rich_error
from tests.ledger_checks import ledger_violations


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


async def test_deposit_transfer_and_history(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    bob = await wallet.sign_up("bob")
    a = await wallet.open_account(alice)
    b = await wallet.open_account(bob)
    await wallet.deposit(a, 10_000)

    response = await wallet.wallet.Transfer(
        wallet_pb2.TransferRequest(
            request_id=str(uuid.uuid4()),
            from_account_id=a,
            to_account_id=b,
            amount=usd(2_500),
            memo="rent share",
        ),
        metadata=alice,
    )
    tx = response.transaction
    assert tx.status == ledger_pb2.TRANSACTION_STATUS_POSTED
    assert tx.kind == ledger_pb2.TRANSACTION_KIND_TRANSFER
    assert (tx.amount.currency_code, tx.amount.amount_minor) == ("USD", 2_500)
    assert sorted(p.amount.amount_minor for p in tx.postings) == [-2_500, 2_500]

    account = (
        await wallet.wallet.GetAccount(wallet_pb2.GetAccountRequest(account_id=a), metadata=alice)
    ).account
    assert (
        account.posted.amount_minor,
        account.pending_out.amount_minor,
        account.available.amount_minor,
    ) == (7_500, 0, 7_500)

    history = await wallet.wallet.ListTransactions(
        wallet_pb2.ListTransactionsRequest(account_id=b, page_size=10), metadata=bob
    )
    assert [t.transaction_id for t in history.transactions] == [tx.transaction_id]
    fetched = await wallet.wallet.GetTransaction(
        wallet_pb2.GetTransactionRequest(transaction_id=tx.transaction_id), metadata=bob
    )
    assert fetched.transaction == tx
    assert await ledger_violations(wallet.engine) == []


async def test_history_pages_newest_first_and_token_is_bound_to_the_account(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    other = await wallet.open_account(alice, "EUR")
    for i in range(5):
        await wallet.deposit(a, 100 + i)

    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await wallet.wallet.ListTransactions(
            wallet_pb2.ListTransactionsRequest(account_id=a, page_size=2, page_token=token),
            metadata=alice,
        )
        pages += 1
        seen += [t.amount.amount_minor for t in page.transactions]
        token = page.next_page_token
        if not token:
            break
        first_token = token
    assert seen == [104, 103, 102, 101, 100]
    assert pages == 3

    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.ListTransactions(
            wallet_pb2.ListTransactionsRequest(account_id=other, page_token=first_token),
            metadata=alice,
        )
    err = rich_error(caught.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in err.violations


async def test_replayed_transfer_returns_same_transaction_and_reuse_is_refused(
    wallet: Wallet,
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 1_000)
    request = wallet_pb2.TransferRequest(
        request_id=str(uuid.uuid4()), from_account_id=a, to_account_id=b, amount=usd(400)
    )

    first = await wallet.wallet.Transfer(request, metadata=alice)
    again = await wallet.wallet.Transfer(request, metadata=alice)
    assert again.transaction.transaction_id == first.transaction.transaction_id

    changed = wallet_pb2.TransferRequest()
    changed.CopyFrom(request)
    changed.amount.amount_minor = 401
    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.Transfer(changed, metadata=alice)
    err = rich_error(caught.value)
    assert (err.code, err.reason, err.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
        "wallet.v1",
    )
    account = (
        await wallet.wallet.GetAccount(wallet_pb2.GetAccountRequest(account_id=a), metadata=alice)
    ).account
    assert account.available.amount_minor == 600


async def test_forty_concurrent_transfers_over_grpc(wallet: Wallet) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 7_500)
    stub = wallet.wallet

    async def one() -> str:
        try:
            await stub.Transfer(
                wallet_pb2.TransferRequest(
                    request_id=str(uuid.uuid4()),
                    from_account_id=a,
                    to_account_id=b,
                    amount=usd(500),
                ),
                metadata=alice,
            )
        except aio.AioRpcError as exc:
            return rich_error(exc).reason
        return "OK"

    outcomes = await asyncio.gather(*(one() for _ in range(40)))
    assert outcomes.count("OK") == 15
    assert outcomes.count("INSUFFICIENT_FUNDS") == 25
    balances = []
    for who, account in ((alice, a), (bob, b)):
        got = await stub.GetAccount(wallet_pb2.GetAccountRequest(account_id=account), metadata=who)
        balances.append(got.account.posted.amount_minor)
    assert balances == [0, 7_500]
    assert await ledger_violations(wallet.engine) == []


@pytest.mark.parametrize(
    ("amount", "field", "fragment"),
    [
        (ledger_pb2.Money(currency_code="USD", amount_minor=0), "amount.amount_minor", "positive"),
        (ledger_pb2.Money(currency_code="USD", amount_minor=-5), "amount.amount_minor", "positive"),
        (ledger_pb2.Money(currency_code="XYZ", amount_minor=5), "amount.currency_code", "unknown"),
        (ledger_pb2.Money(currency_code="", amount_minor=5), "amount.currency_code", "required"),
    ],
)
async def test_bad_amounts_are_invalid_argument_with_field_violations(
    wallet: Wallet, amount: ledger_pb2.Money, field: str, fragment: str
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 1_000)
    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.Transfer(
            wallet_pb2.TransferRequest(
                request_id=str(uuid.uuid4()), from_account_id=a, to_account_id=b, amount=amount
            ),
            metadata=alice,
        )
    err = rich_error(caught.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.violations[field]


async def test_malformed_ids_and_missing_fields_list_every_violation(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.Transfer(
            wallet_pb2.TransferRequest(request_id="not-a-uuid", from_account_id="42"),
            metadata=alice,
        )
    err = rich_error(caught.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"request_id", "from_account_id", "to_account_id", "amount"}


async def test_business_refusals_are_failed_precondition(wallet: Wallet) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a = await wallet.open_account(alice)
    b_eur = await wallet.open_account(bob, "EUR")
    b = await wallet.open_account(bob)
    await wallet.deposit(a, 100)

    async def refusal(to: str, minor: int) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(aio.AioRpcError) as caught:
            await wallet.wallet.Transfer(
                wallet_pb2.TransferRequest(
                    request_id=str(uuid.uuid4()),
                    from_account_id=a,
                    to_account_id=to,
                    amount=usd(minor),
                ),
                metadata=alice,
            )
        err = rich_error(caught.value)
        return err.code, err.reason

    assert await refusal(b, 101) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await refusal(b_eur, 10) == (grpc.StatusCode.FAILED_PRECONDITION, "CURRENCY_MISMATCH")
    assert await refusal(str(uuid.uuid4()), 10) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_another_users_account_and_transaction_are_not_found(wallet: Wallet) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a = await wallet.open_account(alice)
    b = await wallet.open_account(bob)
    await wallet.deposit(b, 100)
    history = await wallet.wallet.ListTransactions(
        wallet_pb2.ListTransactionsRequest(account_id=b), metadata=bob
    )
    calls: list[Awaitable[object]] = [
        wallet.wallet.GetAccount(wallet_pb2.GetAccountRequest(account_id=b), metadata=alice),
        wallet.wallet.GetTransaction(
            wallet_pb2.GetTransactionRequest(transaction_id=history.transactions[0].transaction_id),
            metadata=alice,
        ),
        wallet.wallet.Transfer(
            wallet_pb2.TransferRequest(
                request_id=str(uuid.uuid4()), from_account_id=b, to_account_id=a, amount=usd(1)
            ),
            metadata=alice,
        ),
    ]
    for call in calls:
        with pytest.raises(aio.AioRpcError) as caught:
            await call
        assert rich_error(caught.value).code == grpc.StatusCode.NOT_FOUND


async def test_every_call_is_audited_and_money_calls_commit_with_their_audit_row(
    wallet: Wallet,
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 500)
    request_id = str(uuid.uuid4())
    tx = await wallet.wallet.Transfer(
        wallet_pb2.TransferRequest(
            request_id=request_id, from_account_id=a, to_account_id=b, amount=usd(200)
        ),
        metadata=alice,
    )
    with pytest.raises(aio.AioRpcError):
        await wallet.wallet.GetAccount(wallet_pb2.GetAccountRequest(account_id=b), metadata=alice)

    page = await wallet.admin.GetAuditLog(admin_pb2.GetAuditLogRequest(page_size=3))
    newest, transfer = page.entries[0], page.entries[1]
    assert (newest.method, newest.code) == ("/wallet.v1.WalletService/GetAccount", "NOT_FOUND")
    assert (transfer.method, transfer.code) == ("/wallet.v1.WalletService/Transfer", "OK")
    assert transfer.request_id == request_id
    assert tx.transaction.transaction_id in transfer.resource_ids
    assert transfer.principal.startswith("user:")
    assert page.next_page_token

    everything: list[admin_pb2.AuditEntry] = []
    token = ""
    while True:
        got = await wallet.admin.GetAuditLog(
            admin_pb2.GetAuditLogRequest(page_size=4, page_token=token)
        )
        everything += got.entries
        token = got.next_page_token
        if not token:
            break
    sequences = [e.sequence for e in everything]
    assert sequences == sorted(sequences, reverse=True)
    # 2x(register, login) + 2 open + deposit + transfer + failed get + first audit page.
    assert len(everything) == 10
    text = " ".join(str(e) for e in everything)
    assert "correct horse battery" not in text
    assert "Bearer" not in text


async def test_unimplemented_rpcs_say_so_with_a_reason(wallet: Wallet) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.admin.VerifyAuditChain(admin_pb2.VerifyAuditChainRequest())
    err = rich_error(caught.value)
    assert (err.code, err.reason) == (grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED")


async def test_settlement_accounts_list_by_currency_with_what_deposits_took(
    wallet: Wallet,
) -> None:
    alice = await wallet.sign_up("alice")
    accounts = {c: await wallet.open_account(alice, c) for c in ("USD", "JPY", "EUR")}
    for currency, amount in (("USD", 500), ("JPY", 30), ("EUR", 70), ("USD", 25)):
        await wallet.deposit(accounts[currency], amount, currency)

    seen: list[tuple[str, int, int]] = []
    tokens: list[str] = []
    for _ in range(3):  # bounded: a token that led nowhere new would fail, not loop
        page = await wallet.partner.ListSettlementAccounts(
            partner_pb2.ListSettlementAccountsRequest(
                page_size=2, page_token=tokens[-1] if tokens else ""
            )
        )
        assert len(page.accounts) <= 2
        seen += [
            (a.currency_code, a.posted.amount_minor, a.available.amount_minor)
            for a in page.accounts
        ]
        if not page.next_page_token:
            break
        tokens.append(page.next_page_token)
    assert seen == [("EUR", -70, -70), ("JPY", -30, -30), ("USD", -525, -525)]
    assert len(tokens) == 1

    # Tokens belong to this listing and this partner. The format is plain base64 JSON, so a
    # caller can forge one: another partner's scope, or a position that is no currency,
    # is refused like a token from another listing or none at all.
    def forged(**changes: object) -> str:
        data = json.loads(base64.urlsafe_b64decode(tokens[0] + "=" * (-len(tokens[0]) % 4)))
        raw = json.dumps({**data, **changes}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    other = await wallet.wallet.ListAccounts(
        wallet_pb2.ListAccountsRequest(page_size=1), metadata=alice
    )
    bad_tokens = (
        other.next_page_token,
        "not-a-token",
        forged(s=f"settlement:{uuid.uuid4()}"),
        forged(p="\u0000"),
        forged(p="\ud800"),
        forged(p="ZZZ"),
    )
    for bad in bad_tokens:
        with pytest.raises(aio.AioRpcError) as caught:
            await wallet.partner.ListSettlementAccounts(
                partner_pb2.ListSettlementAccountsRequest(page_token=bad)
            )
        err = rich_error(caught.value)
        assert err.code is grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "page_token" in err.violations
    # The same content, re-encoded, still continues the listing.
    page = await wallet.partner.ListSettlementAccounts(
        partner_pb2.ListSettlementAccountsRequest(page_size=2, page_token=forged())
    )
    assert [a.currency_code for a in page.accounts] == ["USD"]


async def test_accounts_list_in_pages_and_one_account_per_currency(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    opened = [await wallet.open_account(alice, c) for c in ("USD", "EUR", "JPY", "KWD", "GBP")]
    await wallet.sign_up("bob")

    listed: list[str] = []
    token = ""
    while True:
        page = await wallet.wallet.ListAccounts(
            wallet_pb2.ListAccountsRequest(page_size=2, page_token=token), metadata=alice
        )
        assert len(page.accounts) <= 2
        listed += [a.account_id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert listed == opened

    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.open_account(alice, "EUR")
    assert rich_error(caught.value).code == grpc.StatusCode.ALREADY_EXISTS


async def test_transfer_to_a_username_finds_their_account_in_that_currency(
    wallet: Wallet,
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a = await wallet.open_account(alice)
    await wallet.open_account(bob, "EUR")
    b_usd = await wallet.open_account(bob, "USD")
    await wallet.deposit(a, 1_000)

    response = await wallet.wallet.Transfer(
        wallet_pb2.TransferRequest(
            request_id=str(uuid.uuid4()), from_account_id=a, to_username="Bob", amount=usd(250)
        ),
        metadata=alice,
    )
    assert response.transaction.to_account_id == b_usd
    got = await wallet.wallet.GetAccount(
        wallet_pb2.GetAccountRequest(account_id=b_usd), metadata=bob
    )
    assert got.account.available.amount_minor == 250


async def test_an_anonymous_caller_cannot_bloat_the_audit_log(wallet: Wallet) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await wallet.wallet.Transfer(wallet_pb2.TransferRequest(request_id="x" * 1_000_000))
    assert rich_error(caught.value).code == grpc.StatusCode.UNAUTHENTICATED
    page = await wallet.admin.GetAuditLog(admin_pb2.GetAuditLogRequest(page_size=1))
    assert page.entries[0].method == "/wallet.v1.WalletService/Transfer"
    assert page.entries[0].request_id == "x" * 64
