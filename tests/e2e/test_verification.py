"""AdminService.VerifyLedger over mutual TLS with the operator certificate."""

from __future__ import annotations

from sqlalchemy import text
from wallet.v1 import admin_pb2

from tests.e2e.conftest import Wallet
from tests.ledger_checks import count


async def test_verify_ledger_reports_a_corrupted_balance(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    await wallet.deposit(a, 1_000)

    healthy = await wallet.admin.VerifyLedger(admin_pb2.VerifyLedgerRequest())
    assert list(healthy.violations) == []
    assert healthy.accounts_checked == await count(wallet.engine, "SELECT count(*) FROM accounts")
    assert healthy.transactions_checked == 1
    assert healthy.HasField("verify_time")

    async with wallet.engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET posted = posted + 1 WHERE account_id = :a"), {"a": a}
        )
    report = await wallet.admin.VerifyLedger(admin_pb2.VerifyLedgerRequest())
    (violation,) = report.violations
    assert violation.invariant == admin_pb2.LEDGER_INVARIANT_POSTED_BALANCE
    assert violation.account_id == a
    assert violation.transaction_id == ""
    assert (violation.expected.currency_code, violation.expected.amount_minor) == ("USD", 1_000)
    assert (violation.actual.currency_code, violation.actual.amount_minor) == ("USD", 1_001)
