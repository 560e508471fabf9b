"""Withdrawals over TLS/mTLS gRPC: request (hold), complete, fail, and every refusal."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from wallet.v1 import ledger_pb2, partner_pb2, partner_pb2_grpc, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet, channel
from tests.e2e.errors import RichError, rich_error
from tests.ledger_checks import ACCOUNT_BALANCES, ledger_violations
from wallet_server.config import Settings
from wallet_server.domain import ALL_PARTNER_SCOPES, PayoutDestination
from wallet_server.security import SecretBox, issue_certificate, partner_spiffe_id
from wallet_server.services import UnitOfWork, open_destination, register_partner

IBAN = "DE89370400440532013000"


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


def destination(**overrides: str) -> ledger_pb2.PayoutDestination:
    fields = {
        "holder_name": "Alice Example",
        "country_code": "DE",
        "bank_code": "",
        "account_number": "DE89 3704 0044 0532 0130 00",
    }
    fields.update(overrides)
    return ledger_pb2.PayoutDestination(**fields)


def withdrawal_request(
    account_id: str,
    minor: int,
    *,
    request_id: str | None = None,
    currency: str = "USD",
    dest: ledger_pb2.PayoutDestination | None = None,
) -> wallet_pb2.RequestWithdrawalRequest:
    return wallet_pb2.RequestWithdrawalRequest(
        request_id=request_id or str(uuid.uuid4()),
        account_id=account_id,
        amount=ledger_pb2.Money(currency_code=currency, amount_minor=minor),
        destination=dest if dest is not None else destination(),
    )


def complete_request(
    tx_id: str, *, reference: str = "wire-1", request_id: str | None = None
) -> partner_pb2.CompleteWithdrawalRequest:
    return partner_pb2.CompleteWithdrawalRequest(
        request_id=request_id or str(uuid.uuid4()),
        transaction_id=tx_id,
        external_reference=reference,
    )


def fail_request(
    tx_id: str, *, message: str = "account closed", request_id: str | None = None
) -> partner_pb2.FailWithdrawalRequest:
    return partner_pb2.FailWithdrawalRequest(
        request_id=request_id or str(uuid.uuid4()),
        transaction_id=tx_id,
        failure_message=message,
    )


async def refusal(call: Awaitable[object]) -> RichError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    err = rich_error(caught.value)
    assert err.domain == "wallet.v1"
    return err


async def balances(wallet: Wallet, who: Metadata, account_id: str) -> tuple[int, int, int]:
    account = (
        await wallet.wallet.GetAccount(
            wallet_pb2.GetAccountRequest(account_id=account_id), metadata=who
        )
    ).account
    return (
        account.posted.amount_minor,
        account.pending_out.amount_minor,
        account.available.amount_minor,
    )


async def state(wallet: Wallet) -> dict[str, Any]:
    """What a refused call must leave as it was."""
    async with wallet.engine.connect() as conn:

        async def rows(query: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.execute(text(query))]

        return {
            "accounts": await rows(ACCOUNT_BALANCES),
            "transactions": await rows(
                "SELECT transaction_id, status, external_reference, status_message "
                "FROM transactions ORDER BY transaction_id"
            ),
            "postings": await rows("SELECT count(*) FROM postings"),
            "withdrawals": await rows("SELECT count(*) FROM withdrawals"),
            "outbox": await rows("SELECT count(*) FROM outbox"),
        }


async def funded_user(wallet: Wallet, name: str = "alice") -> tuple[Metadata, str]:
    who = await wallet.sign_up(name)
    account = await wallet.open_account(who)
    await wallet.deposit(account, 10_000)
    return who, account


async def other_partner(wallet: Wallet, tmp_path: Path) -> partner_pb2_grpc.PartnerServiceAsyncStub:
    """A second registered partner with every scope (registered after demo: not routed to)."""
    await register_partner(UnitOfWork(wallet.engine), "other", ALL_PARTNER_SCOPES)
    cert, key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    issue_certificate(
        ca_cert_path=wallet.pki.ca_cert,
        ca_key_path=wallet.pki.ca_key,
        out_cert=cert,
        out_key=key,
        spiffe_id=partner_spiffe_id("other"),
    )
    ch = channel(wallet.ports.mtls, wallet.pki, cert, key)
    wallet.channels.append(ch)
    return partner_pb2_grpc.PartnerServiceStub(ch)


# --- main paths -----------------------------------------------------------------------------


async def test_request_then_complete(wallet: Wallet, settings: Settings) -> None:
    alice, account = await funded_user(wallet)

    requested = (
        await wallet.wallet.RequestWithdrawal(withdrawal_request(account, 2_500), metadata=alice)
    ).transaction
    assert requested.kind == ledger_pb2.TRANSACTION_KIND_WITHDRAWAL
    assert requested.status == ledger_pb2.TRANSACTION_STATUS_PENDING
    assert (requested.amount.currency_code, requested.amount.amount_minor) == ("USD", 2_500)
    assert requested.from_account_id == account
    assert requested.to_account_id != ""  # the payout partner's settlement account
    assert list(requested.postings) == []
    assert not requested.HasField("post_time")
    assert await balances(wallet, alice, account) == (10_000, 2_500, 7_500)

    # Stored sealed: the account number is nowhere in the blob, and it opens to the canonical
    # destination with the server's key ring.
    async with wallet.engine.connect() as conn:
        blob = bytes(
            (
                await conn.execute(
                    text("SELECT destination FROM withdrawals WHERE transaction_id = :t"),
                    {"t": requested.transaction_id},
                )
            ).scalar_one()
        )
    assert IBAN.encode() not in blob
    assert b"Alice Example" not in blob
    box = SecretBox(settings.secret_keys, settings.secret_active_key_id)
    assert open_destination(box, UUID(requested.transaction_id), blob) == PayoutDestination(
        holder_name="Alice Example", country_code="DE", bank_code="", account_number=IBAN
    )

    done = (
        await wallet.partner.CompleteWithdrawal(
            complete_request(requested.transaction_id, reference="SEPA-2026-0001")
        )
    ).transaction
    assert done.transaction_id == requested.transaction_id
    assert done.status == ledger_pb2.TRANSACTION_STATUS_POSTED
    assert done.external_reference == "SEPA-2026-0001"
    assert done.HasField("post_time")
    assert sorted((p.account_id, p.amount.amount_minor) for p in done.postings) == sorted(
        [(account, -2_500), (requested.to_account_id, 2_500)]
    )
    assert await balances(wallet, alice, account) == (7_500, 0, 7_500)
    seen = (
        await wallet.wallet.GetTransaction(
            wallet_pb2.GetTransactionRequest(transaction_id=requested.transaction_id),
            metadata=alice,
        )
    ).transaction
    assert seen == done
    assert await ledger_violations(wallet.engine) == []


async def test_request_then_fail(wallet: Wallet) -> None:
    alice, account = await funded_user(wallet)
    requested = (
        await wallet.wallet.RequestWithdrawal(withdrawal_request(account, 4_000), metadata=alice)
    ).transaction

    failed = (
        await wallet.partner.FailWithdrawal(
            fail_request(requested.transaction_id, message="beneficiary account closed")
        )
    ).transaction

    assert failed.status == ledger_pb2.TRANSACTION_STATUS_VOIDED
    assert failed.status_message == "beneficiary account closed"
    assert list(failed.postings) == []
    assert not failed.HasField("post_time")
    assert await balances(wallet, alice, account) == (10_000, 0, 10_000)
    assert await ledger_violations(wallet.engine) == []


async def test_replays_return_the_original_response(wallet: Wallet) -> None:
    alice, account = await funded_user(wallet)
    request = withdrawal_request(account, 1_000)
    first = await wallet.wallet.RequestWithdrawal(request, metadata=alice)
    again = await wallet.wallet.RequestWithdrawal(request, metadata=alice)
    assert again == first
    assert await balances(wallet, alice, account) == (10_000, 1_000, 9_000)

    completion = complete_request(first.transaction.transaction_id)
    done = await wallet.partner.CompleteWithdrawal(completion)
    assert await wallet.partner.CompleteWithdrawal(completion) == done
    assert await balances(wallet, alice, account) == (9_000, 0, 9_000)

    changed = withdrawal_request(
        account, 1_000, request_id=request.request_id, dest=destination(holder_name="Mallory")
    )
    err = await refusal(wallet.wallet.RequestWithdrawal(changed, metadata=alice))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    assert await ledger_violations(wallet.engine) == []


# --- refusals of the request ----------------------------------------------------------------


async def test_malformed_requests_name_every_bad_field(wallet: Wallet) -> None:
    alice, account = await funded_user(wallet)
    before = await state(wallet)

    err = await refusal(
        wallet.wallet.RequestWithdrawal(
            withdrawal_request(
                account,
                1_000,
                dest=destination(holder_name=" ", country_code="XX", account_number="12!"),
            ),
            metadata=alice,
        )
    )
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(err.violations) == {
        "destination.holder_name",
        "destination.country_code",
        "destination.account_number",
    }

    err = await refusal(
        wallet.wallet.RequestWithdrawal(
            withdrawal_request(
                account, 1_000, dest=destination(country_code="US", account_number="123456789")
            ),
            metadata=alice,
        )
    )
    assert set(err.violations) == {"destination.bank_code"}

    err = await refusal(
        wallet.wallet.RequestWithdrawal(
            wallet_pb2.RequestWithdrawalRequest(request_id="nope", account_id=account),
            metadata=alice,
        )
    )
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(err.violations) == {"request_id", "amount", "destination"}
    assert await state(wallet) == before


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("insufficient", "INSUFFICIENT_FUNDS"),
        ("currency", "CURRENCY_MISMATCH"),
        ("frozen", "ACCOUNT_FROZEN"),
        ("no_payout_partner", "FAILED_PRECONDITION"),
    ],
)
async def test_business_refusals_of_the_request(wallet: Wallet, case: str, reason: str) -> None:
    alice, account = await funded_user(wallet)
    amount, currency = (10_001 if case == "insufficient" else 100), "USD"
    if case == "currency":
        currency = "EUR"
    async with wallet.engine.begin() as conn:
        if case == "frozen":
            await conn.execute(
                text("UPDATE accounts SET frozen = true WHERE account_id = :a"), {"a": account}
            )
        if case == "no_payout_partner":
            await conn.execute(text("UPDATE partners SET scopes = '{deposits}'"))
    before = await state(wallet)

    err = await refusal(
        wallet.wallet.RequestWithdrawal(
            withdrawal_request(account, amount, currency=currency), metadata=alice
        )
    )

    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    after = await state(wallet)
    assert after == before
    assert await ledger_violations(wallet.engine) == []


async def test_another_users_account_is_not_found(wallet: Wallet) -> None:
    _, account = await funded_user(wallet)
    mallory = await wallet.sign_up("mallory")
    before = await state(wallet)
    err = await refusal(
        wallet.wallet.RequestWithdrawal(withdrawal_request(account, 100), metadata=mallory)
    )
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert await state(wallet) == before


# --- refusals of completion and failure -----------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("complete", "complete"), ("fail", "complete"), ("complete", "fail"), ("fail", "fail")],
)
async def test_a_finished_withdrawal_is_refused_without_a_second_movement(
    wallet: Wallet, first: str, second: str
) -> None:
    alice, account = await funded_user(wallet)
    tx_id = (
        await wallet.wallet.RequestWithdrawal(withdrawal_request(account, 2_500), metadata=alice)
    ).transaction.transaction_id
    partner = wallet.partner

    def call(action: str) -> Awaitable[object]:
        if action == "complete":
            return partner.CompleteWithdrawal(complete_request(tx_id))
        return partner.FailWithdrawal(fail_request(tx_id))

    await call(first)
    before = await state(wallet)
    balances_before = await balances(wallet, alice, account)

    err = await refusal(call(second))

    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION")
    assert await state(wallet) == before
    assert await balances(wallet, alice, account) == balances_before
    assert await ledger_violations(wallet.engine) == []


async def test_other_partners_and_unknown_ids_get_not_found(wallet: Wallet, tmp_path: Path) -> None:
    alice, account = await funded_user(wallet)
    tx_id = (
        await wallet.wallet.RequestWithdrawal(withdrawal_request(account, 2_500), metadata=alice)
    ).transaction.transaction_id
    other = await other_partner(wallet, tmp_path)
    before = await state(wallet)

    for partner, target in [(other, tx_id), (wallet.partner, str(uuid.uuid4()))]:
        err = await refusal(partner.CompleteWithdrawal(complete_request(target)))
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
        err = await refusal(partner.FailWithdrawal(fail_request(target)))
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")

    assert await state(wallet) == before
    # The routed partner still can.
    await wallet.partner.CompleteWithdrawal(complete_request(tx_id))


async def test_malformed_completion_and_failure_are_invalid_arguments(wallet: Wallet) -> None:
    alice, account = await funded_user(wallet)
    tx_id = (
        await wallet.wallet.RequestWithdrawal(withdrawal_request(account, 2_500), metadata=alice)
    ).transaction.transaction_id
    before = await state(wallet)

    err = await refusal(
        wallet.partner.CompleteWithdrawal(complete_request(tx_id, reference="r" * 129))
    )
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(err.violations) == {"external_reference"}
    err = await refusal(wallet.partner.FailWithdrawal(fail_request(tx_id, message="m" * 201)))
    assert set(err.violations) == {"failure_message"}
    err = await refusal(
        wallet.partner.CompleteWithdrawal(
            partner_pb2.CompleteWithdrawalRequest(request_id="", transaction_id="x")
        )
    )
    assert set(err.violations) == {"request_id", "transaction_id"}

    assert await state(wallet) == before
    # At the limits the texts are accepted.
    await wallet.partner.CompleteWithdrawal(complete_request(tx_id, reference="r" * 128))
