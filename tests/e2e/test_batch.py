"""PartnerService.CreateTransfers over mutual TLS: per-item results, call-level errors,
replays, atomic batches."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from wallet.v1 import ledger_pb2, partner_pb2, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet
from tests.e2e.errors import rich_error
from tests.ledger_checks import count, ledger_violations
from wallet_server import services


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


def transfer(
    source: str, destination: str, minor: int, **fields: object
) -> partner_pb2.TransferItem:
    values: dict[str, object] = {
        "request_id": str(uuid.uuid4()),
        "from_account_id": source,
        "to_account_id": destination,
        "amount": usd(minor),
    }
    values.update(fields)
    return partner_pb2.TransferItem(**values)  # type: ignore[arg-type]


class Setup:
    async def build(self, wallet: Wallet) -> Setup:
        self.wallet = wallet
        self.alice = await wallet.sign_up("alice")
        self.bob = await wallet.sign_up("bob")
        self.a = await wallet.open_account(self.alice)
        self.b = await wallet.open_account(self.bob)
        await wallet.deposit(self.a, 1)  # creates the demo partner's USD settlement account
        async with wallet.engine.connect() as conn:
            self.s = str(
                (
                    await conn.execute(
                        text("SELECT account_id FROM accounts WHERE kind = 'settlement'")
                    )
                ).scalar_one()
            )
        return self

    async def available(self, metadata: Metadata, account_id: str) -> int:
        response = await self.wallet.wallet.GetAccount(
            wallet_pb2.GetAccountRequest(account_id=account_id), metadata=metadata
        )
        return response.account.available.amount_minor

    async def state(self) -> tuple[int, ...]:
        engine = self.wallet.engine
        return (
            await count(engine, "SELECT count(*) FROM transactions"),
            await count(engine, "SELECT count(*) FROM postings"),
            await count(engine, "SELECT count(*) FROM idempotency_keys"),
            await self.available(self.alice, self.a),
            await self.available(self.bob, self.b),
        )


@pytest.fixture
async def setup(wallet: Wallet) -> Setup:
    return await Setup().build(wallet)


def outcome(result: partner_pb2.TransferResult) -> tuple[str, str]:
    if result.WhichOneof("result") == "transaction":
        return ("OK", "")
    return (result.error.reason, result.error.code)


async def test_per_item_results_in_request_order(setup: Setup) -> None:
    s = setup
    items = [
        transfer(s.s, s.a, 500, memo="salary"),
        transfer(s.s, str(uuid.uuid4()), 5),
        transfer(s.a, s.b, 5),  # not the partner's account to spend
        transfer("not-a-uuid", s.b, 5),
        transfer(s.s, s.b, 0),
        transfer(s.s, s.b, 5, memo="x" * 201),
        transfer(s.s, s.b, 250),
        transfer("bad", "also-bad", 0, memo="bell \a"),  # every violation is listed
    ]
    response = await s.wallet.partner.CreateTransfers(
        partner_pb2.CreateTransfersRequest(request_id=str(uuid.uuid4()), transfers=items)
    )

    assert [r.request_id for r in response.results] == [i.request_id for i in items]
    assert [outcome(r) for r in response.results] == [
        ("OK", ""),
        ("NOT_FOUND", "NOT_FOUND"),
        ("NOT_FOUND", "NOT_FOUND"),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ("OK", ""),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    ]
    assert "from_account_id" in response.results[3].error.message
    for field in ("from_account_id", "to_account_id", "amount.amount_minor", "memo"):
        assert field in response.results[7].error.message
    assert "amount.amount_minor" in response.results[4].error.message
    paid = response.results[0].transaction
    assert paid.kind == ledger_pb2.TRANSACTION_KIND_TRANSFER
    assert paid.status == ledger_pb2.TRANSACTION_STATUS_POSTED
    assert (paid.from_account_id, paid.to_account_id, paid.memo) == (s.s, s.a, "salary")
    assert await s.available(s.alice, s.a) == 501
    assert await s.available(s.bob, s.b) == 250
    # The recipient sees the transfer in its own history.
    history = await s.wallet.wallet.ListTransactions(
        wallet_pb2.ListTransactionsRequest(account_id=s.b), metadata=s.bob
    )
    assert [t.transaction_id for t in history.transactions] == [
        response.results[6].transaction.transaction_id
    ]
    assert await ledger_violations(s.wallet.engine) == []


async def test_replay_and_key_reuse(setup: Setup) -> None:
    s = setup
    request = partner_pb2.CreateTransfersRequest(
        request_id=str(uuid.uuid4()), transfers=[transfer(s.s, s.a, 10), transfer(s.s, s.b, 20)]
    )
    first = await s.wallet.partner.CreateTransfers(request)
    before = await s.state()

    assert await s.wallet.partner.CreateTransfers(request) == first
    assert await s.state() == before

    changed = partner_pb2.CreateTransfersRequest()
    changed.CopyFrom(request)
    changed.atomic = True
    with pytest.raises(aio.AioRpcError) as caught:
        await s.wallet.partner.CreateTransfers(changed)
    err = rich_error(caught.value)
    assert (err.code, err.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await s.state() == before

    # An item alone in a new batch returns its original transaction.
    again = await s.wallet.partner.CreateTransfers(
        partner_pb2.CreateTransfersRequest(
            request_id=str(uuid.uuid4()), transfers=[request.transfers[1]]
        )
    )
    assert again.results[0] == first.results[1]
    assert (await s.state())[:2] == before[:2]


async def test_atomic_batch_is_all_or_nothing(setup: Setup) -> None:
    s = setup
    before = await s.state()
    response = await s.wallet.partner.CreateTransfers(
        partner_pb2.CreateTransfersRequest(
            request_id=str(uuid.uuid4()),
            transfers=[transfer(s.s, s.a, 10), transfer(s.s, str(uuid.uuid4()), 20)],
            atomic=True,
        )
    )
    assert [outcome(r) for r in response.results] == [
        ("ABORTED", "ABORTED"),
        ("NOT_FOUND", "NOT_FOUND"),
    ]
    after = await s.state()
    assert after[:2] == before[:2]
    assert after[3:] == before[3:]


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("empty", "transfers"),
        ("too_many", "transfers"),
        ("duplicate", "transfers[1].request_id"),
        ("bad_item_key", "transfers[0].request_id"),
        ("bad_batch_key", "request_id"),
    ],
)
async def test_call_level_errors(setup: Setup, case: str, field: str) -> None:
    s = setup
    items = [transfer(s.s, s.a, 1), transfer(s.s, s.b, 1)]
    request_id = str(uuid.uuid4())
    if case == "empty":
        items = []
    elif case == "too_many":
        items = [transfer(s.s, s.a, 1) for _ in range(1001)]
    elif case == "duplicate":
        items[1].request_id = items[0].request_id
    elif case == "bad_item_key":
        items[0].request_id = "123"
    else:
        request_id = ""
    before = await s.state()

    with pytest.raises(aio.AioRpcError) as caught:
        await s.wallet.partner.CreateTransfers(
            partner_pb2.CreateTransfersRequest(request_id=request_id, transfers=items)
        )

    err = rich_error(caught.value)
    assert (err.code, err.reason, err.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "wallet.v1",
    )
    assert list(err.violations) == [field]
    assert await s.state() == before


async def test_a_thousand_items_over_grpc(setup: Setup) -> None:
    s = setup
    response = await s.wallet.partner.CreateTransfers(
        partner_pb2.CreateTransfersRequest(
            request_id=str(uuid.uuid4()),
            transfers=[transfer(s.s, s.a if i % 2 else s.b, 3) for i in range(1000)],
        )
    )
    assert len(response.results) == 1000
    assert all(outcome(r) == ("OK", "") for r in response.results)
    assert await s.available(s.alice, s.a) == 1 + 1500
    assert await ledger_violations(s.wallet.engine) == []


async def test_one_partner_flooding_batches_is_refused_beyond_its_places(setup: Setup) -> None:
    s = setup
    partner = s.wallet.partner
    sent = 60  # more than MAX_BATCHES_PER_CALLER arrive while two at a time run

    async def batch(n: int) -> str:
        try:
            await partner.CreateTransfers(
                partner_pb2.CreateTransfersRequest(
                    request_id=str(uuid.uuid4()),
                    transfers=[transfer(s.s, s.a if i % 2 else s.b, 1) for i in range(200)],
                )
            )
        except aio.AioRpcError as exc:
            err = rich_error(exc)
            return f"{err.code.name}/{err.reason}"
        return "OK"

    outcomes = await asyncio.gather(*(batch(n) for n in range(sent)))
    applied = outcomes.count("OK")

    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED/RATE_LIMITED"}, outcomes
    assert applied >= services.MAX_BATCHES_PER_CALLER
    # Every accepted batch moved its 200 items; no refused one moved any.
    assert await s.available(s.alice, s.a) + await s.available(s.bob, s.b) == 1 + applied * 200
    assert await ledger_violations(s.wallet.engine) == []
    await partner.CreateTransfers(  # its places came back
        partner_pb2.CreateTransfersRequest(
            request_id=str(uuid.uuid4()), transfers=[transfer(s.s, s.a, 1)]
        )
    )
