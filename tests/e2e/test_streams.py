"""Live event streams: ordered, resumable without loss or duplicates, and private."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterable
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import ledger_pb2, partner_pb2, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet, make_settings, running
from tests.e2e.errors import rich_error
from tests.e2e.test_withdrawals import IBAN, withdrawal_request
from wallet_server.security import DevPkiPaths


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


async def take(stream: AsyncIterable[Any], count: int, within: float = 10.0) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(within):
        async for item in stream:
            got.append(item.event)
            if len(got) == count:
                break
    return got


async def transfer(wallet: Wallet, who: Metadata, source: str, target: str, minor: int) -> str:
    response = await wallet.wallet.Transfer(
        wallet_pb2.TransferRequest(
            request_id=str(uuid.uuid4()),
            from_account_id=source,
            to_account_id=target,
            amount=usd(minor),
        ),
        metadata=who,
    )
    return response.transaction.transaction_id


async def test_watch_account_sends_stored_then_live_events_in_order(wallet: Wallet) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 1_000)  # stored before the stream opens

    stream = wallet.wallet.WatchAccount(
        wallet_pb2.WatchAccountRequest(account_id=a, after_sequence=0), metadata=alice
    )
    first = await take(stream, 1)
    assert first[0].type == ledger_pb2.EVENT_TYPE_TRANSACTION_CREATED
    assert first[0].transaction.kind == ledger_pb2.TRANSACTION_KIND_DEPOSIT
    assert first[0].account.available.amount_minor == 1_000

    started = time.perf_counter()
    tx_id = await transfer(wallet, alice, a, b, 300)
    live = await take(stream, 1)
    latency = time.perf_counter() - started
    stream.cancel()

    assert live[0].transaction.transaction_id == tx_id
    assert live[0].sequence > first[0].sequence
    assert live[0].account.available.amount_minor == 700
    assert latency < 2.0  # delivery is by notification; the benchmark measures it precisely


async def test_reconnecting_after_the_last_sequence_misses_nothing_and_repeats_nothing(
    wallet: Wallet,
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 10_000)
    sent = [await transfer(wallet, alice, a, b, 10 + i) for i in range(3)]

    stream = wallet.wallet.WatchAccount(
        wallet_pb2.WatchAccountRequest(account_id=a), metadata=alice
    )
    seen = await take(stream, 4)  # the deposit and three transfers
    stream.cancel()
    last = seen[-1].sequence

    sent += [await transfer(wallet, alice, a, b, 20 + i) for i in range(5)]  # while away
    resumed = wallet.wallet.WatchAccount(
        wallet_pb2.WatchAccountRequest(account_id=a, after_sequence=last), metadata=alice
    )
    later = await take(resumed, 5)
    sent.append(await transfer(wallet, alice, a, b, 99))
    later += await take(resumed, 1)
    resumed.cancel()

    ids = [e.transaction.transaction_id for e in seen[1:] + later]
    assert ids == sent
    sequences = [e.sequence for e in seen + later]
    assert sequences == sorted(set(sequences))


async def test_many_concurrent_writers_reach_the_watcher_in_commit_order(
    wallet: Wallet,
) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    a, b = await wallet.open_account(alice), await wallet.open_account(bob)
    await wallet.deposit(a, 100_000)
    stream = wallet.wallet.WatchAccount(wallet_pb2.WatchAccountRequest(account_id=b), metadata=bob)
    sent = await asyncio.gather(*(transfer(wallet, alice, a, b, 1 + i) for i in range(30)))
    got = await take(stream, 30)
    stream.cancel()
    assert sorted(e.transaction.transaction_id for e in got) == sorted(sent)
    # Balances only grow for the receiver, so the snapshots must grow with the sequence.
    balances = [e.account.posted.amount_minor for e in got]
    assert balances == sorted(balances)
    assert balances[-1] == sum(1 + i for i in range(30))


async def test_another_users_account_cannot_be_watched(wallet: Wallet) -> None:
    alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
    b = await wallet.open_account(bob)
    stream = wallet.wallet.WatchAccount(
        wallet_pb2.WatchAccountRequest(account_id=b), metadata=alice
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await take(stream, 1)
    assert rich_error(caught.value).code == grpc.StatusCode.NOT_FOUND


async def test_partner_stream_carries_its_own_deposits(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    await wallet.deposit(a, 500)
    stream = wallet.partner.WatchEvents(partner_pb2.WatchEventsRequest(after_sequence=0))
    got = await take(stream, 1)
    await wallet.deposit(a, 700)
    got += await take(stream, 1)
    stream.cancel()
    assert [e.transaction.amount.amount_minor for e in got] == [500, 700]
    assert all(not e.HasField("account") for e in got)


async def test_the_payout_partner_sees_where_to_pay_and_the_user_sees_the_hold(
    wallet: Wallet,
) -> None:
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    await wallet.deposit(a, 5_000)
    partner_stream = wallet.partner.WatchEvents(partner_pb2.WatchEventsRequest())
    await take(partner_stream, 1)  # the deposit
    user_stream = wallet.wallet.WatchAccount(
        wallet_pb2.WatchAccountRequest(account_id=a), metadata=alice
    )
    await take(user_stream, 1)

    requested = await wallet.wallet.RequestWithdrawal(withdrawal_request(a, 1_200), metadata=alice)

    (seen_by_partner,) = await take(partner_stream, 1)
    (seen_by_user,) = await take(user_stream, 1)
    partner_stream.cancel()
    user_stream.cancel()
    assert seen_by_partner.transaction.transaction_id == requested.transaction.transaction_id
    assert seen_by_partner.payout_destination.account_number == IBAN
    assert not seen_by_user.HasField("payout_destination")
    assert seen_by_user.account.pending_out.amount_minor == 1_200
    assert seen_by_user.account.available.amount_minor == 3_800


async def _refusal_of(stream: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as caught:
        await take(stream, 1)
    err = rich_error(caught.value)
    return err.code, err.reason


async def test_a_caller_holds_only_so_many_open_streams(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths
) -> None:
    settings = make_settings(database_url, pki, max_streams_per_caller=2)
    async with running(clean_db, settings, pki) as wallet:
        alice, bob = await wallet.sign_up("alice"), await wallet.sign_up("bob")
        a, b = await wallet.open_account(alice), await wallet.open_account(bob)
        await wallet.deposit(a, 100)  # a stored event: a stream's first message shows it open
        await wallet.deposit(b, 100)

        def watch(who: Metadata, account: str) -> Any:
            return wallet.wallet.WatchAccount(
                wallet_pb2.WatchAccountRequest(account_id=account), metadata=who
            )

        def partner_events() -> Any:
            return wallet.partner.WatchEvents(partner_pb2.WatchEventsRequest())

        alices = [watch(alice, a), watch(alice, a)]
        partners = [partner_events(), partner_events()]
        for stream in alices + partners:
            await take(stream, 1)

        refused = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert await _refusal_of(watch(alice, a)) == refused
        assert await _refusal_of(partner_events()) == refused
        await take(watch(bob, b), 1)  # the limit is each caller's own

        # A stream the client closes gives its place back, once the server has seen it go.
        alices.pop().cancel()
        reopened: Any = None
        for _ in range(100):
            reopened = watch(alice, a)
            try:
                await take(reopened, 1)
                break
            except aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the closed stream's place never came back")
        async with clean_db.connect() as conn:
            codes = (
                await conn.execute(
                    text(
                        "SELECT code, count(*) FROM audit_log "
                        "WHERE method LIKE '%/Watch%' GROUP BY code ORDER BY code"
                    )
                )
            ).all()
        # Opened: alice's two, the partner's two, bob's and alice's reopened one.
        audited: dict[str, int] = {str(code): int(n) for code, n in codes}
        assert audited.pop("OK") == 6
        assert audited.pop("RESOURCE_EXHAUSTED") >= 2
        assert audited == {}
