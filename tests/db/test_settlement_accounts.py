"""A partner's settlement accounts: its own only, by currency, with current balances."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import count
from wallet_server import services
from wallet_server.domain import PartnerPrincipal


async def listed(
    uow: Callable[[], services.UnitOfWork], partner: PartnerPrincipal, page_size: int = 100
) -> list[list[tuple[str, int]]]:
    """Every page of the partner's listing as (currency, posted) pairs."""
    pages: list[list[tuple[str, int]]] = []
    after: str | None = None
    while True:
        page = await services.list_settlement_accounts(
            services.ListSettlementAccounts(
                caller=partner, page_size=page_size, after_currency=after
            ),
            uow(),
        )
        pages.append([(a.currency, a.posted) for a in page.accounts])
        after = page.next_after_currency
        if after is None:
            return pages


async def test_each_partner_sees_its_own_accounts_by_currency_with_every_change(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    accounts = {c: await ledger.account(alice, c) for c in ("USD", "EUR", "JPY")}
    bank = await ledger.partner("bank")
    other = await ledger.partner("other")
    assert await listed(uow, bank) == [[]]

    for currency, amount in (("USD", 100), ("JPY", 7), ("EUR", 20), ("USD", 50)):
        await ledger.deposit(bank, accounts[currency], amount, currency)
    await ledger.deposit(other, accounts["USD"], 1_000)

    # The settlement rows themselves were not written: the changes are appended.
    assert await count(clean_db, "SELECT count(*) FROM balance_deltas") == 5
    expected = [("EUR", -20), ("JPY", -7), ("USD", -150)]
    assert await listed(uow, bank) == [expected]
    assert await listed(uow, other) == [[("USD", -1_000)]]

    # Part folded, then all folded: the balances read the same throughout. The two oldest
    # changes take their accounts' others with them (bank's second USD deposit).
    first = await services.fold_balance_deltas(uow(), limit=2)
    assert (first.taken, first.folded) == (2, 3)
    assert await listed(uow, bank) == [expected]
    assert (await services.fold_balance_deltas(uow())).folded == 2
    assert await listed(uow, bank, page_size=2) == [expected[:2], expected[2:]]
    assert await listed(uow, bank, page_size=1) == [[e] for e in expected]
