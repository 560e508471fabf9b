"""Exchange rates, quotes, exchanges and reversals over TLS / mutual TLS gRPC."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from grpc import aio
from wallet.v1 import admin_pb2, ledger_pb2, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet
from tests.e2e.errors import RichError, rich_error
from tests.ledger_checks import count, ledger_violations


def money(currency: str, minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code=currency, amount_minor=minor)


async def failure(call: Awaitable[Any]) -> RichError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)


async def set_rate(wallet: Wallet, from_currency: str, to_currency: str, rate: str) -> Any:
    return await wallet.admin.SetExchangeRate(
        admin_pb2.SetExchangeRateRequest(
            request_id=str(uuid.uuid4()),
            from_currency_code=from_currency,
            to_currency_code=to_currency,
            rate=rate,
        )
    )


async def balances(wallet: Wallet, user: Metadata, *account_ids: str) -> list[int]:
    return [
        (
            await wallet.wallet.GetAccount(
                wallet_pb2.GetAccountRequest(account_id=a), metadata=user
            )
        ).account.available.amount_minor
        for a in account_ids
    ]


async def test_operator_sets_rates_user_quotes_and_exchanges(wallet: Wallet) -> None:
    set_ = await set_rate(wallet, "USD", "JPY", "0151.370")
    assert (set_.exchange_rate.rate, set_.exchange_rate.from_currency_code) == ("151.37", "USD")
    await set_rate(wallet, "JPY", "KWD", "0.00203")
    listed = await wallet.admin.ListExchangeRates(admin_pb2.ListExchangeRatesRequest(page_size=1))
    assert [(r.from_currency_code, r.to_currency_code) for r in listed.exchange_rates] == [
        ("JPY", "KWD")
    ]
    rest = await wallet.admin.ListExchangeRates(
        admin_pb2.ListExchangeRatesRequest(page_size=1, page_token=listed.next_page_token)
    )
    assert [(r.rate, r.update_time.seconds > 0) for r in rest.exchange_rates] == [("151.37", True)]
    assert rest.next_page_token == ""

    alice = await wallet.sign_up("alice")
    usd = await wallet.open_account(alice, "USD")
    jpy = await wallet.open_account(alice, "JPY")
    kwd = await wallet.open_account(alice, "KWD")
    await wallet.deposit(usd, 10_000)

    quote = (
        await wallet.wallet.GetQuote(
            wallet_pb2.GetQuoteRequest(
                from_account_id=usd, to_account_id=jpy, from_amount=money("USD", 100)
            ),
            metadata=alice,
        )
    ).quote
    assert (quote.from_amount, quote.to_amount, quote.rate) == (
        money("USD", 100),
        money("JPY", 151),
        "151.37",
    )
    assert quote.expire_time.ToDatetime() > quote.create_time.ToDatetime()

    tx = (
        await wallet.wallet.ExchangeCurrency(
            wallet_pb2.ExchangeCurrencyRequest(
                request_id=str(uuid.uuid4()), quote_id=quote.quote_id
            ),
            metadata=alice,
        )
    ).transaction
    assert (tx.kind, tx.status) == (
        ledger_pb2.TRANSACTION_KIND_EXCHANGE,
        ledger_pb2.TRANSACTION_STATUS_POSTED,
    )
    assert (tx.amount, tx.to_amount, tx.exchange_rate) == (
        money("USD", 100),
        money("JPY", 151),
        "151.37",
    )
    assert sorted((p.amount.currency_code, p.amount.amount_minor) for p in tx.postings) == [
        ("JPY", -151),
        ("JPY", 151),
        ("USD", -100),
        ("USD", 100),
    ]
    assert await balances(wallet, alice, usd, jpy) == [9_900, 151]

    # Buying an exact amount of KWD: the yen price is rounded up.
    to_kwd = (
        await wallet.wallet.GetQuote(
            wallet_pb2.GetQuoteRequest(
                from_account_id=jpy, to_account_id=kwd, to_amount=money("KWD", 205)
            ),
            metadata=alice,
        )
    ).quote
    assert to_kwd.from_amount == money("JPY", 101)  # 205 / 2.03 = 100.98...
    await wallet.wallet.ExchangeCurrency(
        wallet_pb2.ExchangeCurrencyRequest(request_id=str(uuid.uuid4()), quote_id=to_kwd.quote_id),
        metadata=alice,
    )
    assert await balances(wallet, alice, jpy, kwd) == [50, 205]
    assert await ledger_violations(wallet.engine) == []


async def test_exchange_errors_over_the_wire(wallet: Wallet) -> None:
    await set_rate(wallet, "USD", "JPY", "151.37")
    await set_rate(wallet, "KWD", "USD", "3.2543")
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    usd, jpy = await wallet.open_account(alice, "USD"), await wallet.open_account(alice, "JPY")
    kwd = await wallet.open_account(alice, "KWD")
    bob_jpy = await wallet.open_account(bob, "JPY")
    await wallet.deposit(usd, 1_000)

    def get_quote(user: Metadata, **fields: Any) -> Awaitable[Any]:
        return wallet.wallet.GetQuote(wallet_pb2.GetQuoteRequest(**fields), metadata=user)

    def exchange(user: Metadata, quote_id: str) -> Awaitable[Any]:
        return wallet.wallet.ExchangeCurrency(
            wallet_pb2.ExchangeCurrencyRequest(request_id=str(uuid.uuid4()), quote_id=quote_id),
            metadata=user,
        )

    quote_cases: list[tuple[dict[str, Any], grpc.StatusCode, str, str | None]] = [
        (
            {"from_account_id": usd, "to_account_id": jpy},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "from_amount",
        ),
        (
            {"from_account_id": usd, "to_account_id": usd, "from_amount": money("USD", 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "to_account_id",
        ),
        (
            {"from_account_id": usd, "to_account_id": jpy, "to_amount": money("USD", 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "to_amount.currency_code",
        ),
        (
            {"from_account_id": kwd, "to_account_id": usd, "from_amount": money("KWD", 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "from_amount.amount_minor",
        ),
        (
            {"from_account_id": usd, "to_account_id": jpy, "from_amount": money("USD", -5)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "from_amount.amount_minor",
        ),
        (
            {"from_account_id": usd, "to_account_id": jpy, "from_amount": money("USD", 2**63 - 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "AMOUNT_OVERFLOW",
            "from_amount.amount_minor",
        ),
        (
            {"from_account_id": jpy, "to_account_id": usd, "from_amount": money("JPY", 100)},
            grpc.StatusCode.FAILED_PRECONDITION,
            "FAILED_PRECONDITION",
            None,
        ),
        (
            {"from_account_id": usd, "to_account_id": bob_jpy, "from_amount": money("USD", 1)},
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            None,
        ),
    ]
    for fields, code, reason, field in quote_cases:
        err = await failure(get_quote(alice, **fields))
        assert (err.code, err.reason, err.domain) == (code, reason, "wallet.v1"), fields
        if field is not None:
            assert field in err.violations, (fields, err.violations)
    assert await count(wallet.engine, "SELECT count(*) FROM quotes") == 0

    too_much = (
        await get_quote(
            alice, from_account_id=usd, to_account_id=jpy, from_amount=money("USD", 1_001)
        )
    ).quote
    ok = (
        await get_quote(
            alice, from_account_id=usd, to_account_id=jpy, from_amount=money("USD", 100)
        )
    ).quote
    await exchange(alice, ok.quote_id)
    postings_before = await count(wallet.engine, "SELECT count(*) FROM postings")

    exchange_cases = [
        (alice, too_much.quote_id, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        (alice, ok.quote_id, grpc.StatusCode.FAILED_PRECONDITION, "QUOTE_EXPIRED"),
        (bob, ok.quote_id, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (alice, str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (alice, "not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ]
    for user, quote_id, code, reason in exchange_cases:
        err = await failure(exchange(user, quote_id))
        assert (err.code, err.reason) == (code, reason), quote_id
    assert await count(wallet.engine, "SELECT count(*) FROM postings") == postings_before
    assert await balances(wallet, alice, usd, jpy) == [900, 151]
    assert await ledger_violations(wallet.engine) == []


async def test_set_exchange_rate_refuses_bad_input(wallet: Wallet) -> None:
    cases = [
        (("USD", "JPY", "-1"), "rate"),
        (("USD", "JPY", "0"), "rate"),
        (("USD", "JPY", "1e3"), "rate"),
        (("USD", "JPY", "1.0000000000001"), "rate"),
        (("USD", "USD", "1"), "to_currency_code"),
        (("usd", "JPY", "1"), "from_currency_code"),
        (("USD", "XXX", "1"), "to_currency_code"),
    ]
    for (from_currency, to_currency, rate), field in cases:
        err = await failure(set_rate(wallet, from_currency, to_currency, rate))
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert field in err.violations, (from_currency, to_currency, rate, err.violations)
    listed = await wallet.admin.ListExchangeRates(admin_pb2.ListExchangeRatesRequest())
    assert list(listed.exchange_rates) == []


async def test_reversing_an_exchange_and_the_links_between_them(wallet: Wallet) -> None:
    await set_rate(wallet, "USD", "JPY", "151.37")
    alice = await wallet.sign_up("alice")
    usd, jpy = await wallet.open_account(alice, "USD"), await wallet.open_account(alice, "JPY")
    await wallet.deposit(usd, 1_000)
    quote = (
        await wallet.wallet.GetQuote(
            wallet_pb2.GetQuoteRequest(
                from_account_id=usd, to_account_id=jpy, from_amount=money("USD", 1_000)
            ),
            metadata=alice,
        )
    ).quote
    original = (
        await wallet.wallet.ExchangeCurrency(
            wallet_pb2.ExchangeCurrencyRequest(
                request_id=str(uuid.uuid4()), quote_id=quote.quote_id
            ),
            metadata=alice,
        )
    ).transaction

    def reverse(transaction_id: str, reason: str = "customer complaint") -> Awaitable[Any]:
        return wallet.admin.ReverseTransaction(
            admin_pb2.ReverseTransactionRequest(
                request_id=str(uuid.uuid4()), transaction_id=transaction_id, reason=reason
            )
        )

    err = await failure(reverse(original.transaction_id, reason=""))
    assert (err.code, "reason" in err.violations) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    err = await failure(reverse(original.transaction_id, reason="x" * 201))
    assert (err.code, "reason" in err.violations) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    err = await failure(reverse(str(uuid.uuid4())))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert await count(wallet.engine, "SELECT count(*) FROM transactions") == 2

    reversal = (await reverse(original.transaction_id)).transaction
    assert (reversal.kind, reversal.reverses_transaction_id, reversal.memo) == (
        ledger_pb2.TRANSACTION_KIND_REVERSAL,
        original.transaction_id,
        "customer complaint",
    )
    assert (reversal.amount, reversal.to_amount) == (money("JPY", 1_513), money("USD", 1_000))
    assert await balances(wallet, alice, usd, jpy) == [1_000, 0]

    seen = (
        await wallet.wallet.GetTransaction(
            wallet_pb2.GetTransactionRequest(transaction_id=original.transaction_id),
            metadata=alice,
        )
    ).transaction
    assert seen.reversed_by_transaction_id == reversal.transaction_id
    assert list(seen.postings) == list(original.postings)

    for again in (original.transaction_id, reversal.transaction_id):
        err = await failure(reverse(again))
        assert (err.code, err.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "FAILED_PRECONDITION",
        )
    assert await count(wallet.engine, "SELECT count(*) FROM transactions") == 3
    assert await ledger_violations(wallet.engine) == []
