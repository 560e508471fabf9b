"""Model-based check: random operations on a tiny in-memory model and on the real service
must agree on every balance and every outcome, and the ledger must stay consistent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    Money,
    NotFound,
    PartnerPrincipal,
    PayoutDestination,
    UserPrincipal,
)
from wallet_server.security import SecretBox

USERS = 3
DESTINATION = PayoutDestination("Model Holder", "DE", "", "DE89370400440532013000")
SECRETS = SecretBox({"k": b"m" * 32}, "k")

amounts = st.integers(min_value=1, max_value=5_000)
who = st.integers(min_value=0, max_value=USERS - 1)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), who, amounts),
        st.tuples(st.just("transfer"), who, who, amounts),
        st.tuples(st.just("withdraw"), who, amounts),
        st.tuples(st.just("complete"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("fail"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("replay"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=25,
)


@dataclass
class Model:
    """What the ledger should look like: per user (posted, pending_out); withdrawal states."""

    posted: list[int] = field(default_factory=lambda: [0] * USERS)
    held: list[int] = field(default_factory=lambda: [0] * USERS)
    withdrawals: list[tuple[int, int, str]] = field(default_factory=list)  # user, amount, state

    def available(self, user: int) -> int:
        return self.posted[user] - self.held[user]


async def _reset(engine: AsyncEngine) -> None:
    from wallet_server.storage import metadata

    tables = ", ".join(t.name for t in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_random_operations_agree_with_the_model(
    ledger: Ledger, clean_db: AsyncEngine, ops: list[tuple[Any, ...]]
) -> None:
    await _reset(clean_db)
    uow = ledger.uow
    users: list[UserPrincipal] = [await ledger.user(f"user{i}") for i in range(USERS)]
    accounts: list[UUID] = [await ledger.account(u) for u in users]
    partner: PartnerPrincipal = await ledger.partner()
    model = Model()
    withdrawal_ids: list[UUID] = []
    done: list[tuple[Any, Any]] = []  # (command, outcome) of earlier calls, for replays
    # Every other deposit and transfer goes through the group-commit path, so replays
    # cross between the two paths too.
    groups = services.MovementGroups(uow)
    groups.start()

    async def grouped_deposit(command: services.Deposit, _: Any) -> Any:
        return await groups.deposit(command)

    async def grouped_transfer(command: services.Transfer, _: Any) -> Any:
        return await groups.transfer(command)

    async def call(use_case: Any, command: Any, *extra: Any) -> Any:
        try:
            outcome: Any = await use_case(command, uow(), *extra)
        except (FailedPrecondition, NotFound) as exc:
            outcome = exc.reason
        done.append(((use_case, command, extra), outcome))
        return outcome

    other_path = {
        services.deposit: grouped_deposit,
        grouped_deposit: services.deposit,
        services.transfer: grouped_transfer,
        grouped_transfer: services.transfer,
    }
    for position, op in enumerate(ops):
        kind = op[0]
        grouped = position % 2 == 1
        if kind == "deposit":
            _, user, amount = op
            await call(
                grouped_deposit if grouped else services.deposit,
                services.Deposit(partner, uuid4(), accounts[user], Money("USD", amount), "m"),
            )
            model.posted[user] += amount
        elif kind == "transfer":
            _, source, target, amount = op
            outcome = await call(
                grouped_transfer if grouped else services.transfer,
                services.Transfer(
                    users[source],
                    uuid4(),
                    accounts[source],
                    accounts[target],
                    None,
                    Money("USD", amount),
                    "",
                ),
            )
            if source == target:
                assert outcome == "SAME_ACCOUNT"
            elif model.available(source) < amount:
                assert outcome == "INSUFFICIENT_FUNDS"
            else:
                assert not isinstance(outcome, str)
                model.posted[source] -= amount
                model.posted[target] += amount
        elif kind == "withdraw":
            _, user, amount = op
            outcome = await call(
                services.request_withdrawal,
                services.RequestWithdrawal(
                    users[user], uuid4(), accounts[user], Money("USD", amount), DESTINATION
                ),
                SECRETS,
            )
            if model.available(user) < amount:
                assert outcome == "INSUFFICIENT_FUNDS"
            else:
                withdrawal_ids.append(outcome.transaction_id)
                model.withdrawals.append((user, amount, "pending"))
                model.held[user] += amount
        elif kind in ("complete", "fail") and withdrawal_ids:
            index = op[1] % len(withdrawal_ids)
            user, amount, state = model.withdrawals[index]
            if kind == "complete":
                command: Any = services.CompleteWithdrawal(
                    partner, uuid4(), withdrawal_ids[index], "ref"
                )
                outcome = await call(services.complete_withdrawal, command)
            else:
                command = services.FailWithdrawal(partner, uuid4(), withdrawal_ids[index], "no")
                outcome = await call(services.fail_withdrawal, command)
            if state != "pending":
                assert outcome == "FAILED_PRECONDITION"
            else:
                model.held[user] -= amount
                if kind == "complete":
                    model.posted[user] -= amount
                model.withdrawals[index] = (user, amount, kind)
        elif kind == "replay" and done:
            (use_case, command, extra), first = done[op[1] % len(done)]
            try:
                # Through the other path where there are two: both see the same records.
                again: Any = await other_path.get(use_case, use_case)(command, uow(), *extra)
            except (FailedPrecondition, NotFound) as exc:
                again = exc.reason
            assert again == first  # the original answer, and nothing runs twice

        for i in range(USERS):
            account = await services.get_account(services.GetAccount(users[i], accounts[i]), uow())
            assert (account.posted, account.pending_out) == (model.posted[i], model.held[i])

    await groups.stop()
    assert await ledger_violations(clean_db) == []
