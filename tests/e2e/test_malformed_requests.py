"""Requests no valid call could send: bytes that are not the method's protobuf message,
values a field's type allows but nothing means, forged page tokens. Each gets a clear
INVALID_ARGUMENT with ErrorInfo (after authentication), is audited, and applies nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc import aio
from sqlalchemy import text
from wallet.v1 import ledger_pb2, partner_pb2, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet, channel
from tests.e2e.errors import RichError, rich_error

# Field 1 (a string) says 255 bytes follow; one does. No message type parses it.
TRUNCATED = b"\x0a\xff\x01"


def _raw(data: bytes) -> bytes:
    return data


def _public_channel(wallet: Wallet) -> aio.Channel:
    """A channel of the test's own to the public port (raw calls), closed with the others."""
    public = channel(wallet.ports.public, wallet.pki)
    wallet.channels.append(public)
    return public


async def _call(
    ch: aio.Channel, path: str, data: bytes, metadata: Metadata, *, streaming: bool
) -> None:
    if streaming:
        call = ch.unary_stream(path, request_serializer=_raw, response_deserializer=_raw)(
            data, metadata=metadata, timeout=10
        )
        async for _ in call:
            pass
    else:
        await ch.unary_unary(path, request_serializer=_raw, response_deserializer=_raw)(
            data, metadata=metadata, timeout=10
        )


async def _send(
    ch: aio.Channel, path: str, data: bytes, metadata: Metadata = (), *, streaming: bool = False
) -> RichError:
    with pytest.raises(aio.AioRpcError) as caught:
        await _call(ch, path, data, metadata, streaming=streaming)
    return rich_error(caught.value)


async def _audit_codes(wallet: Wallet, method_prefix: str) -> list[tuple[str, str]]:
    async with wallet.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT method, code FROM audit_log WHERE method LIKE :prefix ORDER BY seq"),
            {"prefix": f"/wallet.v1.{method_prefix}%"},
        )
    return [(str(m).removeprefix("/wallet.v1."), str(c)) for m, c in rows]


def _invalid(err: RichError, message_type: str) -> bool:
    return (
        err.code == grpc.StatusCode.INVALID_ARGUMENT
        and err.reason == "INVALID_ARGUMENT"
        and err.domain == "wallet.v1"
        and message_type in err.message
        and "DecodeError" not in err.message
    )


async def test_undecodable_requests_are_invalid_argument_for_every_kind_of_method(
    wallet: Wallet,
) -> None:
    alice = await wallet.sign_up("alice")
    public = _public_channel(wallet)

    login = await _send(public, "/wallet.v1.AuthService/Login", TRUNCATED)
    transfer = await _send(public, "/wallet.v1.WalletService/Transfer", TRUNCATED, alice)
    watch = await _send(
        public, "/wallet.v1.WalletService/WatchAccount", TRUNCATED, alice, streaming=True
    )

    assert _invalid(login, "wallet.v1.LoginRequest"), login
    assert _invalid(transfer, "wallet.v1.TransferRequest"), transfer
    assert _invalid(watch, "wallet.v1.WatchAccountRequest"), watch
    assert await _audit_codes(wallet, "WalletService/") == [
        ("WalletService/Transfer", "INVALID_ARGUMENT"),
        ("WalletService/WatchAccount", "INVALID_ARGUMENT"),
    ]


async def test_an_undecodable_request_is_refused_only_after_authentication(
    wallet: Wallet,
) -> None:
    public = _public_channel(wallet)

    err = await _send(public, "/wallet.v1.WalletService/Transfer", TRUNCATED)

    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
    assert await _audit_codes(wallet, "WalletService/") == [
        ("WalletService/Transfer", "UNAUTHENTICATED")
    ]


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda good: good[:-1], id="cut short"),
        pytest.param(lambda good: good + b"\x0a\xff", id="trailing garbage"),
        pytest.param(lambda good: b"\xff" + good, id="bad tag"),
        pytest.param(lambda good: good.replace(b"transit", b"tr\xffnsit"), id="not UTF-8"),
    ],
)
async def test_a_corrupted_deposit_moves_no_money(
    wallet: Wallet, corrupt: Callable[[bytes], bytes]
) -> None:
    alice = await wallet.sign_up("alice")
    account_id = await wallet.open_account(alice)
    partner = wallet.partner  # opens the mTLS channel with the partner's certificate
    good = partner_pb2.DepositRequest(
        request_id="6f0c2e1a-3b9d-4a57-9d0e-0a9b8c7d6e5f",
        account_id=account_id,
        amount=ledger_pb2.Money(currency_code="USD", amount_minor=5_000),
        external_reference="corrupted in transit",
    ).SerializeToString()
    mtls = wallet.channels[-1]

    err = await _send(mtls, "/wallet.v1.PartnerService/Deposit", corrupt(good))

    assert _invalid(err, "wallet.v1.DepositRequest"), err
    await partner.Deposit(partner_pb2.DepositRequest.FromString(good))  # the key is still free
    async with wallet.engine.connect() as conn:
        balance = await conn.scalar(
            text("SELECT posted FROM accounts WHERE account_id = :id"), {"id": account_id}
        )
    assert balance == 5_000


async def test_times_and_page_positions_beyond_their_ranges_are_invalid_argument(
    wallet: Wallet,
) -> None:
    alice = await wallet.sign_up("alice")
    account_id = await wallet.open_account(alice)
    await wallet.deposit(account_id, 100)
    await wallet.deposit(account_id, 200)
    listing = wallet.wallet

    with pytest.raises(aio.AioRpcError) as caught:
        await listing.ListTransactions(
            wallet_pb2.ListTransactionsRequest(
                account_id=account_id,
                start_time=timestamp_pb2.Timestamp(seconds=2**62),
                end_time=timestamp_pb2.Timestamp(nanos=-5),
            ),
            metadata=alice,
        )
    times = rich_error(caught.value)

    first = await listing.ListTransactions(
        wallet_pb2.ListTransactionsRequest(account_id=account_id, page_size=1), metadata=alice
    )
    token = json.loads(base64.urlsafe_b64decode(first.next_page_token + "=="))
    token["p"] = 2**70  # past any sequence the database can hold
    forged = base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")
    with pytest.raises(aio.AioRpcError) as caught:
        await listing.ListTransactions(
            wallet_pb2.ListTransactionsRequest(account_id=account_id, page_token=forged),
            metadata=alice,
        )
    position = rich_error(caught.value)

    assert (times.code, times.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert times.violations == {
        "start_time": "not a valid time",
        "end_time": "not a valid time",
    }
    assert (position.code, list(position.violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["page_token"],
    )


async def test_methods_wallet_v1_does_not_have_are_unimplemented_with_error_info(
    wallet: Wallet,
) -> None:
    alice = await wallet.sign_up("alice")
    public = _public_channel(wallet)
    wallet.partner  # noqa: B018 (opens the partner's mTLS channel)
    partner = wallet.channels[-1]
    long_name = "/wallet.v1.WalletService/" + "N" * 5_000
    calls = [
        (public, "/wallet.v1.WalletService/Nope", alice),
        (public, "/wallet.v1.WalletService/Nope", ()),  # nobody may call it: no credential asked
        (public, "/wallet.v1.AdminService/Nope", alice),
        (partner, "/wallet.v1.PartnerService/Nope", ()),
        (partner, "/wallet.v1.NopeService/Nope", ()),
        (public, long_name, alice),
    ]

    answers = [await _send(ch, path, b"anything", who) for ch, path, who in calls]

    for answer in answers:
        assert (answer.code, answer.reason, answer.domain) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "UNIMPLEMENTED",
            "wallet.v1",
        ), answer
        assert "__" not in answer.message
        assert len(answer.message) < 200
    assert (
        (await _audit_codes(wallet, ""))[2:]
        == [  # after alice's Register and Login
            ("WalletService/Nope", "UNIMPLEMENTED"),
            ("WalletService/Nope", "UNIMPLEMENTED"),
            ("AdminService/Nope", "UNIMPLEMENTED"),
            ("PartnerService/Nope", "UNIMPLEMENTED"),
            ("NopeService/Nope", "UNIMPLEMENTED"),
            (long_name[:128].removeprefix("/wallet.v1."), "UNIMPLEMENTED"),
        ]
    )
