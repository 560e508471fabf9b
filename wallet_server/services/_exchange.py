"""Use cases: exchange rates (operators), quotes and exchanges (users)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from wallet_server.domain import (
    QUOTE_LIFETIME,
    AccountKind,
    EventType,
    ExchangeRate,
    InvalidArgument,
    Money,
    OperatorPrincipal,
    Quote,
    Transaction,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
    check_quote_executable,
    plan_exchange,
    price_quote,
    transaction_event,
)
from wallet_server.services._accounts import account_not_found, load_own_account
from wallet_server.services._call import note_resources
from wallet_server.services._events import publish
from wallet_server.services._idempotency import run_once
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

# --- commands and results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetExchangeRate:
    caller: OperatorPrincipal
    request_id: UUID
    from_currency: str
    to_currency: str
    rate: str  # canonical text (domain.parse_rate)


@dataclass(frozen=True, slots=True)
class ListExchangeRates:
    caller: OperatorPrincipal
    page_size: int
    after: tuple[str, str] | None  # last (from, to) pair of the previous page


@dataclass(frozen=True, slots=True)
class ExchangeRatePage:
    rates: tuple[ExchangeRate, ...]
    next_after: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class GetQuote:
    """Price an exchange; exactly one of ``from_amount`` and ``to_amount`` is set."""

    caller: UserPrincipal
    from_account_id: UUID
    to_account_id: UUID
    from_amount: Money | None
    to_amount: Money | None


@dataclass(frozen=True, slots=True)
class ExchangeCurrency:
    caller: UserPrincipal
    request_id: UUID
    quote_id: UUID


# --- rates --------------------------------------------------------------------------------------


@retry_on_conflict
async def set_exchange_rate(cmd: SetExchangeRate, uow: UnitOfWork) -> ExchangeRate:
    """Set (or replace) the rate of one direction; quotes made afterwards use it."""
    if cmd.from_currency == cmd.to_currency:
        raise InvalidArgument.for_field("to_currency_code", "must differ from from_currency_code")
    async with uow:

        async def execute() -> ExchangeRate:
            return await uow.exchange.set_rate(
                ExchangeRate(
                    from_currency=cmd.from_currency,
                    to_currency=cmd.to_currency,
                    rate=cmd.rate,
                    updated_at=uow.now(),
                ),
                updated_by=cmd.caller.key,
            )

        note_resources(f"rate:{cmd.from_currency}:{cmd.to_currency}")
        rate = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="SetExchangeRate",
            command=cmd,
            result_type=ExchangeRate,
            execute=execute,
        )
        await uow.commit()
        return rate


@retry_on_conflict
async def list_exchange_rates(cmd: ListExchangeRates, uow: UnitOfWork) -> ExchangeRatePage:
    async with uow:
        found = await uow.exchange.list_rates(after=cmd.after, limit=cmd.page_size + 1)
        await uow.commit()
    page = tuple(found[: cmd.page_size])
    more = len(found) > cmd.page_size
    last = page[-1] if page else None
    return ExchangeRatePage(
        page, (last.from_currency, last.to_currency) if more and last is not None else None
    )


# --- quotes and exchanges -----------------------------------------------------------------------


@retry_on_conflict
async def get_quote(cmd: GetQuote, uow: UnitOfWork) -> Quote:
    """Price an exchange between two of the caller's accounts and store the quote, which
    fixes both amounts until it expires (QUOTE_LIFETIME after now)."""
    async with uow:
        note_resources(cmd.from_account_id, cmd.to_account_id)
        source = await load_own_account(uow, cmd.caller, cmd.from_account_id)
        destination = await load_own_account(uow, cmd.caller, cmd.to_account_id)
        rate = (
            None
            if source.currency == destination.currency
            else await uow.exchange.get_rate(source.currency, destination.currency)
        )
        from_amount, to_amount = price_quote(
            source=source,
            destination=destination,
            rate=rate,
            from_amount=cmd.from_amount,
            to_amount=cmd.to_amount,
        )
        assert rate is not None  # price_quote refuses a missing rate
        now = uow.now()
        quote = Quote(
            quote_id=uow.new_id(),
            user_id=cmd.caller.user_id,
            from_account_id=source.account_id,
            to_account_id=destination.account_id,
            from_amount=from_amount,
            to_amount=to_amount,
            rate=rate.rate,
            created_at=now,
            expires_at=now + QUOTE_LIFETIME,
        )
        await uow.exchange.add_quote(quote)
        note_resources(quote.quote_id)
        await uow.commit()
        return quote


@retry_on_conflict
async def exchange_currency(cmd: ExchangeCurrency, uow: UnitOfWork) -> Transaction:
    """Execute a quote once: one POSTED EXCHANGE with four legs through the FX pools."""
    async with uow:

        async def execute() -> Transaction:
            # The quote row first: concurrent executions of one quote queue here, and all
            # but the first find it executed.
            quote = check_quote_executable(
                await uow.exchange.lock_quote(cmd.quote_id),
                user_id=cmd.caller.user_id,
                now=uow.now(),
            )
            from_pool = await uow.ledger.ensure_system_account(
                account_id=uow.new_id(),
                kind=AccountKind.FX_POOL,
                currency=quote.from_amount.currency,
            )
            to_pool = await uow.ledger.ensure_system_account(
                account_id=uow.new_id(),
                kind=AccountKind.FX_POOL,
                currency=quote.to_amount.currency,
            )
            locked = await uow.ledger.lock_accounts(
                (quote.from_account_id, quote.to_account_id, from_pool, to_pool)
            )
            for account_id in (quote.from_account_id, quote.to_account_id):
                account = locked.get(account_id)
                if account is None or account.owner_user_id != cmd.caller.user_id:
                    raise account_not_found(account_id)
            legs = plan_exchange(quote, locked, from_pool_id=from_pool, to_pool_id=to_pool)
            now = uow.now()
            tx = Transaction(
                transaction_id=uow.new_id(),
                kind=TransactionKind.EXCHANGE,
                status=TransactionStatus.POSTED,
                amount=quote.from_amount,
                from_account_id=quote.from_account_id,
                to_account_id=quote.to_account_id,
                memo="",
                external_reference="",
                created_at=now,
                posted_at=now,
                postings=legs,
                to_amount=quote.to_amount,
                exchange_rate=quote.rate,
            )
            changed = await uow.ledger.record(tx, initiator=cmd.caller.key)
            await uow.exchange.mark_quote_executed(quote.quote_id, tx.transaction_id)
            publish(uow, transaction_event(EventType.TRANSACTION_CREATED, tx, changed))
            return tx

        note_resources(cmd.quote_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="ExchangeCurrency",
            command=cmd,
            result_type=Transaction,
            execute=execute,
        )
        note_resources(tx.from_account_id, tx.to_account_id, tx.transaction_id)
        await uow.commit()
        return tx


__all__ = [
    "ExchangeCurrency",
    "ExchangeRatePage",
    "GetQuote",
    "ListExchangeRates",
    "SetExchangeRate",
    "exchange_currency",
    "get_quote",
    "list_exchange_rates",
    "set_exchange_rate",
]
