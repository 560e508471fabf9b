"""Identity end to end: bearer tokens, client certificates, revocation, sign-in, and the audit
trail every refused call still leaves behind.

Each refusal is checked the way a client SDK sees it (gRPC code + ErrorInfo reason/domain), and
where the call could have changed something, that nothing changed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    ledger_pb2,
    partner_pb2,
    partner_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

from tests.e2e.conftest import Metadata, Wallet, channel, make_settings, running
from tests.e2e.errors import RichError, rich_error
from wallet_server.config import ConfigError, Settings
from wallet_server.domain import SCOPE_MERCHANT
from wallet_server.security import (
    AccessTokenCodec,
    DevPkiPaths,
    ensure_dev_pki,
    issue_certificate,
    peer_certificate_from_pem,
)
from wallet_server.services import UnitOfWork, register_partner

PASSWORD = "correct horse battery"
DOMAIN = "wallet.v1"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def refusal(call: Awaitable[object]) -> RichError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)


def what(err: RichError) -> tuple[grpc.StatusCode, str, str]:
    return err.code, err.reason, err.domain


async def audit_trail(wallet: Wallet) -> list[admin_pb2.AuditEntry]:
    """Every audit row, oldest first (the audit log's own pages are audited after this)."""
    entries: list[admin_pb2.AuditEntry] = []
    token = ""
    admin = wallet.admin
    while True:
        page = await admin.GetAuditLog(
            admin_pb2.GetAuditLogRequest(page_size=100, page_token=token)
        )
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries[::-1]


async def audited(wallet: Wallet) -> list[tuple[str, str]]:
    """(Service/Method, code) of every audit row, oldest first."""
    return [(e.method.removeprefix("/wallet.v1."), e.code) for e in await audit_trail(wallet)]


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


def deposit_request(account_id: str, minor: int = 1_000) -> partner_pb2.DepositRequest:
    return partner_pb2.DepositRequest(
        request_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=usd(minor),
        external_reference="identity-test",
    )


async def balance(wallet: Wallet, who: Metadata, account_id: str) -> int:
    got = await wallet.wallet.GetAccount(
        wallet_pb2.GetAccountRequest(account_id=account_id), metadata=who
    )
    return got.account.posted.amount_minor


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def token_of(metadata: Metadata) -> str:
    return metadata[0][1].removeprefix("Bearer ")


def new_client_cert(
    pki: DevPkiPaths,
    directory: Path,
    name: str,
    *,
    spiffe_id: str | None = None,
    dns_names: Sequence[str] = (),
) -> tuple[Path, Path]:
    """A client certificate issued by the test CA (a valid chain) with the given identity."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    issue_certificate(
        ca_cert_path=pki.ca_cert,
        ca_key_path=pki.ca_key,
        out_cert=cert,
        out_key=key,
        spiffe_id=spiffe_id,
        dns_names=dns_names,
    )
    return cert, key


def mtls(wallet: Wallet, cert: Path, key: Path) -> aio.Channel:
    ch = channel(wallet.ports.mtls, wallet.pki, cert, key)
    wallet.channels.append(ch)
    return ch


def serial_of(cert: Path) -> int:
    return peer_certificate_from_pem(cert.read_bytes()).serial_number


# --- bearer tokens -----------------------------------------------------------------------


async def test_user_rpc_without_a_token_is_credentials_missing_on_either_port(
    wallet: Wallet,
) -> None:
    public = await refusal(wallet.auth.GetMe(auth_pb2.GetMeRequest()))
    # A client certificate does not make anyone a user.
    on_mtls = auth_pb2_grpc.AuthServiceStub(
        mtls(wallet, wallet.pki.partner_cert, wallet.pki.partner_key)
    )
    with_cert = await refusal(on_mtls.GetMe(auth_pb2.GetMeRequest()))
    opened = await refusal(
        wallet.wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code="USD")
        )
    )

    for err in (public, with_cert, opened):
        assert what(err) == (UNAUTHENTICATED, "CREDENTIALS_MISSING", DOMAIN)
    assert await audited(wallet) == [
        ("AuthService/GetMe", "UNAUTHENTICATED"),
        ("AuthService/GetMe", "UNAUTHENTICATED"),
        ("WalletService/OpenAccount", "UNAUTHENTICATED"),
    ]


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6cGFzc3dvcmQ=", "Bearer", "bearer", "Token abc", "abc", "Bearer not-a-jwt"],
)
async def test_malformed_authorization_header_is_token_invalid(wallet: Wallet, header: str) -> None:
    err = await refusal(
        wallet.auth.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", header),))
    )

    assert what(err) == (UNAUTHENTICATED, "TOKEN_INVALID", DOMAIN)
    assert await audited(wallet) == [("AuthService/GetMe", "UNAUTHENTICATED")]


async def test_several_authorization_headers_are_refused_whatever_their_order(
    wallet: Wallet,
) -> None:
    (valid,) = await wallet.sign_up("alice")
    garbage = ("authorization", "Bearer not-a-jwt")

    refusals = [
        await refusal(wallet.auth.GetMe(auth_pb2.GetMeRequest(), metadata=both))
        for both in ((valid, garbage), (garbage, valid), (valid, valid))
    ]

    assert [what(err) for err in refusals] == [(UNAUTHENTICATED, "TOKEN_INVALID", DOMAIN)] * 3
    await wallet.auth.GetMe(auth_pb2.GetMeRequest(), metadata=(valid,))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(char: str) -> str:
    return "A" if char != "A" else "B"


def flip_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    # The first character: it carries six whole bits of the MAC (the last one carries only
    # four, and changing padding bits would leave the signature valid).
    return f"{head}.{payload}.{_flip(signature[0])}{signature[1:]}"


def swap_subject(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    claims["sub"] = str(uuid.uuid4())
    return f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"


def alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    head = _b64(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    return f"{head}.{payload}."


def drop_signature(token: str) -> str:
    return token.rpartition(".")[0] + "."


def other_key_same_kid(token: str) -> str:
    claims = json.loads(_unb64(token.split(".")[1]))
    codec = AccessTokenCodec({"k1": b"x" * 32}, "k1", timedelta(minutes=15))
    return codec.issue(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])).token


def unknown_kid(token: str) -> str:
    claims = json.loads(_unb64(token.split(".")[1]))
    codec = AccessTokenCodec({"k9": b"t" * 32}, "k9", timedelta(minutes=15))
    return codec.issue(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])).token


@pytest.mark.parametrize(
    "forge",
    [flip_signature, swap_subject, alg_none, drop_signature, other_key_same_kid, unknown_kid],
)
async def test_tampered_or_foreign_token_is_token_invalid_and_changes_nothing(
    wallet: Wallet, forge: Callable[[str], str]
) -> None:
    alice = await wallet.sign_up("alice")
    forged = forge(token_of(alice))
    assert forged != token_of(alice)

    err = await refusal(
        wallet.wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code="USD"),
            metadata=bearer(forged),
        )
    )

    assert what(err) == (UNAUTHENTICATED, "TOKEN_INVALID", DOMAIN)
    accounts = await wallet.wallet.ListAccounts(wallet_pb2.ListAccountsRequest(), metadata=alice)
    assert list(accounts.accounts) == []
    assert (await audited(wallet))[2:] == [
        ("WalletService/OpenAccount", "UNAUTHENTICATED"),
        ("WalletService/ListAccounts", "OK"),
    ]


async def test_token_from_the_past_is_token_expired(wallet: Wallet, settings: Settings) -> None:
    alice = await wallet.sign_up("alice")
    me = (await wallet.auth.GetMe(auth_pb2.GetMeRequest(), metadata=alice)).user
    # The server's own key, but a clock an hour behind: expired 45 minutes ago.
    codec = AccessTokenCodec(
        settings.token_keys,
        settings.token_active_key_id,
        timedelta(minutes=15),
        clock=lambda: datetime.now(UTC) - timedelta(hours=1),
    )
    stale = codec.issue(uuid.UUID(me.user_id), uuid.uuid4()).token

    err = await refusal(wallet.auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(stale)))

    assert what(err) == (UNAUTHENTICATED, "TOKEN_EXPIRED", DOMAIN)
    assert (await audited(wallet))[-1] == ("AuthService/GetMe", "UNAUTHENTICATED")


async def test_token_expires_on_the_servers_clock_and_refresh_renews_it(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths
) -> None:
    clock = FakeClock()
    async with running(clean_db, make_settings(database_url, pki), pki, clock) as wallet:
        auth = wallet.auth
        await auth.Register(
            auth_pb2.RegisterRequest(username="alice", password=PASSWORD, display_name="Alice")
        )
        login = await auth.Login(
            auth_pb2.LoginRequest(username="alice", password=PASSWORD, device_name="phone")
        )
        alice = bearer(login.tokens.access_token)
        clock.advance(timedelta(seconds=899))
        assert (await auth.GetMe(auth_pb2.GetMeRequest(), metadata=alice)).user.username == "alice"

        clock.advance(timedelta(seconds=1))
        err = await refusal(auth.GetMe(auth_pb2.GetMeRequest(), metadata=alice))
        assert what(err) == (UNAUTHENTICATED, "TOKEN_EXPIRED", DOMAIN)

        renewed = await auth.RefreshSession(
            auth_pb2.RefreshSessionRequest(refresh_token=login.tokens.refresh_token)
        )
        me = await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(renewed.tokens.access_token))
        assert me.user.username == "alice"
        assert await audited(wallet) == [
            ("AuthService/Register", "OK"),
            ("AuthService/Login", "OK"),
            ("AuthService/GetMe", "OK"),
            ("AuthService/GetMe", "UNAUTHENTICATED"),
            ("AuthService/RefreshSession", "OK"),
            ("AuthService/GetMe", "OK"),
        ]


async def test_bearer_token_works_on_the_mtls_port_with_any_client_certificate(
    wallet: Wallet, tmp_path: Path
) -> None:
    alice = await wallet.sign_up("alice")
    ghost_cert, ghost_key = new_client_cert(
        wallet.pki, tmp_path, "ghost", spiffe_id="spiffe://wallet/partner/ghost"
    )
    for cert, key, currency in (
        (wallet.pki.partner_cert, wallet.pki.partner_key, "USD"),
        (wallet.pki.admin_cert, wallet.pki.admin_key, "EUR"),
        (ghost_cert, ghost_key, "JPY"),  # valid chain, registered as nobody
    ):
        stub = wallet_pb2_grpc.WalletServiceStub(mtls(wallet, cert, key))
        await stub.OpenAccount(
            wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code=currency),
            metadata=alice,
        )
        me = await auth_pb2_grpc.AuthServiceStub(mtls(wallet, cert, key)).GetMe(
            auth_pb2.GetMeRequest(), metadata=alice
        )
        assert me.user.username == "alice"

    accounts = await wallet.wallet.ListAccounts(wallet_pb2.ListAccountsRequest(), metadata=alice)
    assert len(accounts.accounts) == 3
    principals = {e.principal for e in (await audit_trail(wallet))[2:]}
    assert len(principals) == 1
    assert principals.pop().startswith("user:")


async def test_logout_ends_the_session_for_refresh(wallet: Wallet) -> None:
    auth = wallet.auth
    await auth.Register(
        auth_pb2.RegisterRequest(username="alice", password=PASSWORD, display_name="Alice")
    )
    phone = await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))
    laptop = await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))

    await auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(phone.tokens.access_token))

    err = await refusal(
        auth.RefreshSession(
            auth_pb2.RefreshSessionRequest(refresh_token=phone.tokens.refresh_token)
        )
    )
    assert what(err) == (UNAUTHENTICATED, "TOKEN_INVALID", DOMAIN)
    other = await auth.RefreshSession(
        auth_pb2.RefreshSessionRequest(refresh_token=laptop.tokens.refresh_token)
    )
    assert other.tokens.session_id == laptop.tokens.session_id
    assert (await audited(wallet))[3:] == [
        ("AuthService/Logout", "OK"),
        ("AuthService/RefreshSession", "UNAUTHENTICATED"),
        ("AuthService/RefreshSession", "OK"),
    ]


async def test_access_token_is_refused_right_after_logout(wallet: Wallet) -> None:
    auth = wallet.auth
    await auth.Register(
        auth_pb2.RegisterRequest(username="alice", password=PASSWORD, display_name="Alice")
    )
    phone = await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))
    laptop = await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))
    on_phone = bearer(phone.tokens.access_token)
    assert (await auth.GetMe(auth_pb2.GetMeRequest(), metadata=on_phone)).user.username == "alice"

    await auth.Logout(auth_pb2.LogoutRequest(), metadata=on_phone)

    # At once, although the token itself is still within its lifetime. (One call at a time:
    # an aio call starts when it is created, and the audit order below must be fixed.)
    for start in (
        lambda: auth.GetMe(auth_pb2.GetMeRequest(), metadata=on_phone),
        lambda: wallet.wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code="USD"),
            metadata=on_phone,
        ),
        lambda: auth.Logout(auth_pb2.LogoutRequest(), metadata=on_phone),
    ):
        err = await refusal(start())
        assert what(err) == (UNAUTHENTICATED, "TOKEN_INVALID", DOMAIN)
        assert err.message == "the session has ended"
    other = await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(laptop.tokens.access_token))
    assert other.user.username == "alice"
    accounts = await wallet.wallet.ListAccounts(
        wallet_pb2.ListAccountsRequest(), metadata=bearer(laptop.tokens.access_token)
    )
    assert list(accounts.accounts) == []
    assert (await audited(wallet))[3:] == [
        ("AuthService/GetMe", "OK"),
        ("AuthService/Logout", "OK"),
        ("AuthService/GetMe", "UNAUTHENTICATED"),
        ("WalletService/OpenAccount", "UNAUTHENTICATED"),
        ("AuthService/Logout", "UNAUTHENTICATED"),
        ("AuthService/GetMe", "OK"),
        ("WalletService/ListAccounts", "OK"),
    ]


async def test_access_tokens_are_refused_right_after_refresh_token_reuse(wallet: Wallet) -> None:
    auth = wallet.auth
    await auth.Register(
        auth_pb2.RegisterRequest(username="alice", password=PASSWORD, display_name="Alice")
    )
    login = await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))
    rotated = await auth.RefreshSession(
        auth_pb2.RefreshSessionRequest(refresh_token=login.tokens.refresh_token)
    )
    access_tokens = (login.tokens.access_token, rotated.tokens.access_token)
    for token in access_tokens:
        await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token))

    # Someone replays the first refresh token: the whole session ends, its access tokens too.
    reused = await refusal(
        auth.RefreshSession(
            auth_pb2.RefreshSessionRequest(refresh_token=login.tokens.refresh_token)
        )
    )
    assert what(reused) == (UNAUTHENTICATED, "REFRESH_TOKEN_REUSED", DOMAIN)

    for token in access_tokens:
        err = await refusal(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token)))
        assert what(err) == (UNAUTHENTICATED, "TOKEN_INVALID", DOMAIN)
        assert err.message == "the session has ended"
    assert [code for _, code in (await audited(wallet))[-3:]] == ["UNAUTHENTICATED"] * 3


# --- client certificates ------------------------------------------------------------------


async def test_partner_and_admin_rpcs_on_the_public_port_are_unauthenticated(
    wallet: Wallet,
) -> None:
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    public = channel(wallet.ports.public, wallet.pki)
    wallet.channels.append(public)
    partner_on_public = partner_pb2_grpc.PartnerServiceStub(public)
    admin_on_public = admin_pb2_grpc.AdminServiceStub(public)

    refusals = [
        await refusal(partner_on_public.Deposit(deposit_request(a))),
        # A user's bearer token is no substitute for a certificate.
        await refusal(partner_on_public.Deposit(deposit_request(a), metadata=alice)),
        await refusal(admin_on_public.GetAuditLog(admin_pb2.GetAuditLogRequest())),
        await refusal(admin_on_public.GetAuditLog(admin_pb2.GetAuditLogRequest(), metadata=alice)),
    ]

    for err in refusals:
        assert what(err) == (UNAUTHENTICATED, "CREDENTIALS_MISSING", DOMAIN)
    assert await balance(wallet, alice, a) == 0
    trail = await audit_trail(wallet)
    assert [(e.method.removeprefix("/wallet.v1."), e.code, e.principal) for e in trail[3:7]] == [
        ("PartnerService/Deposit", "UNAUTHENTICATED", "anonymous"),
        ("PartnerService/Deposit", "UNAUTHENTICATED", "anonymous"),
        ("AdminService/GetAuditLog", "UNAUTHENTICATED", "anonymous"),
        ("AdminService/GetAuditLog", "UNAUTHENTICATED", "anonymous"),
    ]


async def test_wrong_kind_of_certificate_is_permission_denied(wallet: Wallet) -> None:
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    admin_as_partner = partner_pb2_grpc.PartnerServiceStub(
        mtls(wallet, wallet.pki.admin_cert, wallet.pki.admin_key)
    )
    partner_as_admin = admin_pb2_grpc.AdminServiceStub(
        mtls(wallet, wallet.pki.partner_cert, wallet.pki.partner_key)
    )

    deposit = await refusal(admin_as_partner.Deposit(deposit_request(a)))
    audit = await refusal(partner_as_admin.GetAuditLog(admin_pb2.GetAuditLogRequest()))

    assert what(deposit) == (PERMISSION_DENIED, "WRONG_PRINCIPAL_KIND", DOMAIN)
    assert what(audit) == (PERMISSION_DENIED, "WRONG_PRINCIPAL_KIND", DOMAIN)
    assert await balance(wallet, alice, a) == 0
    trail = await audit_trail(wallet)
    assert [
        (e.method.removeprefix("/wallet.v1."), e.code, e.principal[:8]) for e in trail[3:5]
    ] == [
        ("PartnerService/Deposit", "PERMISSION_DENIED", "operator"),
        ("AdminService/GetAuditLog", "PERMISSION_DENIED", "partner:"),
    ]


@pytest.mark.parametrize(
    "spiffe_id",
    [
        "spiffe://wallet/partner/ghost",
        "spiffe://wallet/operator/ghost",
        # A registered name under a foreign trust domain is not that partner.
        "spiffe://elsewhere/partner/demo",
        None,  # no SPIFFE id at all, only a DNS name
    ],
)
async def test_valid_but_unregistered_certificate_is_unknown_principal(
    wallet: Wallet, tmp_path: Path, spiffe_id: str | None
) -> None:
    dns_names = ["client.example"] if spiffe_id is None else []
    cert, key = new_client_cert(
        wallet.pki, tmp_path, "ghost", spiffe_id=spiffe_id, dns_names=dns_names
    )
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    ghost = mtls(wallet, cert, key)

    deposit = await refusal(partner_pb2_grpc.PartnerServiceStub(ghost).Deposit(deposit_request(a)))
    audit = await refusal(
        admin_pb2_grpc.AdminServiceStub(ghost).GetAuditLog(admin_pb2.GetAuditLogRequest())
    )

    assert what(deposit) == (PERMISSION_DENIED, "UNKNOWN_PRINCIPAL", DOMAIN)
    assert what(audit) == (PERMISSION_DENIED, "UNKNOWN_PRINCIPAL", DOMAIN)
    assert await balance(wallet, alice, a) == 0
    assert (await audited(wallet))[3:5] == [
        ("PartnerService/Deposit", "PERMISSION_DENIED"),
        ("AdminService/GetAuditLog", "PERMISSION_DENIED"),
    ]


async def test_partner_without_the_scope_is_missing_scope(wallet: Wallet, tmp_path: Path) -> None:
    await register_partner(UnitOfWork(wallet.engine), "limited", {SCOPE_MERCHANT})
    cert, key = new_client_cert(
        wallet.pki, tmp_path, "limited", spiffe_id="spiffe://wallet/partner/limited"
    )
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)

    err = await refusal(
        partner_pb2_grpc.PartnerServiceStub(mtls(wallet, cert, key)).Deposit(deposit_request(a))
    )

    assert what(err) == (PERMISSION_DENIED, "MISSING_SCOPE", DOMAIN)
    assert await balance(wallet, alice, a) == 0
    assert (await audited(wallet))[3] == ("PartnerService/Deposit", "PERMISSION_DENIED")


# What partner.proto documents for each RPC ("Scope X"); the others "need no scope".
SCOPED_PARTNER_RPCS = {
    "Deposit",
    "CompleteWithdrawal",
    "FailWithdrawal",
    "CreateOrder",
    "GetOrder",
    "RefundPayment",
    "CreateTransfers",
}


async def test_partner_scopes_are_the_ones_the_contract_documents(
    wallet: Wallet, tmp_path: Path
) -> None:
    await register_partner(UnitOfWork(wallet.engine), "bare", set())
    cert, key = new_client_cert(
        wallet.pki, tmp_path, "bare", spiffe_id="spiffe://wallet/partner/bare"
    )
    bare = mtls(wallet, cert, key)
    methods = partner_pb2.DESCRIPTOR.services_by_name["PartnerService"].methods
    assert SCOPED_PARTNER_RPCS.issubset(m.name for m in methods)

    for method in methods:
        path = f"/wallet.v1.PartnerService/{method.name}"
        outcome = await _call_code(bare, path, (), method.server_streaming)
        if method.name in SCOPED_PARTNER_RPCS:
            assert outcome == "PERMISSION_DENIED/MISSING_SCOPE", path
        else:
            assert not outcome.startswith(("UNAUTHENTICATED", "PERMISSION_DENIED")), (
                path,
                outcome,
            )


async def test_certificate_from_another_ca_is_refused_at_the_handshake(
    wallet: Wallet, tmp_path: Path
) -> None:
    foreign = ensure_dev_pki(tmp_path / "foreign")  # same names, different CA
    alice = await wallet.sign_up("alice")
    a = await wallet.open_account(alice)
    stub = partner_pb2_grpc.PartnerServiceStub(
        mtls(wallet, foreign.partner_cert, foreign.partner_key)
    )

    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Deposit(deposit_request(a), timeout=10)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await balance(wallet, alice, a) == 0
    # No RPC ever reached the server: nothing to audit.
    assert [m for m, _ in await audited(wallet)] == [
        "AuthService/Register",
        "AuthService/Login",
        "WalletService/OpenAccount",
        "WalletService/GetAccount",
    ]


def revocation_settings(database_url: str, pki: DevPkiPaths, path: Path) -> Settings:
    return make_settings(database_url, pki, revoked_serials_file=path)


async def test_revoked_certificate_is_refused_although_its_chain_is_valid(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths, tmp_path: Path
) -> None:
    revoked = tmp_path / "revoked.txt"
    revoked.write_text(
        f"# the demo partner's laptop was stolen\n{hex(serial_of(pki.partner_cert))}\n"
    )
    settings = revocation_settings(database_url, pki, revoked)
    async with running(clean_db, settings, pki) as wallet:
        alice = await wallet.sign_up("alice")
        a = await wallet.open_account(alice)

        err = await refusal(wallet.partner.Deposit(deposit_request(a)))

        assert what(err) == (UNAUTHENTICATED, "CERTIFICATE_REVOKED", DOMAIN)
        assert await balance(wallet, alice, a) == 0
        # Other certificates are unaffected (the audit trail is read with the admin's).
        trail = await audit_trail(wallet)
        assert (trail[3].method, trail[3].code, trail[3].principal) == (
            "/wallet.v1.PartnerService/Deposit",
            "UNAUTHENTICATED",
            "anonymous",
        )


async def _deposit_outcome(wallet: Wallet, account_id: str) -> str:
    try:
        await wallet.partner.Deposit(deposit_request(account_id, 1))
    except aio.AioRpcError as exc:
        err = rich_error(exc)
        return f"{err.code.name}/{err.reason}"
    return "OK"


async def test_revocation_added_while_running_takes_effect_within_the_reread_window(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths, tmp_path: Path
) -> None:
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("# nothing revoked yet\n")
    settings = revocation_settings(database_url, pki, revoked)
    async with running(clean_db, settings, pki) as wallet:
        alice = await wallet.sign_up("alice")
        a = await wallet.open_account(alice)
        assert await _deposit_outcome(wallet, a) == "OK"

        revoked.write_text(f"{serial_of(pki.partner_cert)}\n")
        added = time.monotonic()
        outcome = "OK"
        while outcome == "OK" and time.monotonic() - added < 5.0:
            await asyncio.sleep(0.1)
            outcome = await _deposit_outcome(wallet, a)
        took = time.monotonic() - added

        assert outcome == "UNAUTHENTICATED/CERTIFICATE_REVOKED"
        assert took < 2.0  # re-read at most a second apart, plus scheduling slack
        posted = await balance(wallet, alice, a)
        codes = [code for method, code in await audited(wallet) if method.endswith("/Deposit")]
        assert codes.count("OK") == posted  # one minor unit per accepted deposit
        assert codes[-1] == "UNAUTHENTICATED"


def _remove(revoked: Path) -> None:
    revoked.unlink()  # a deleted (or moved) list must not silently un-revoke anyone


def _break_in_place(revoked: Path) -> None:
    # An edit that cannot be parsed, keeping the file's size and mtime: the server must
    # neither fail calls nor forget the revocation, nor miss that the file changed.
    before = revoked.stat()
    revoked.write_text("x" * (before.st_size - 1) + "\n")
    os.utime(revoked, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize(
    ("change", "logged"),
    [(_remove, "is missing"), (_break_in_place, "could not be read")],
    ids=["removed", "broken in place"],
)
async def test_a_revocation_file_gone_or_broken_while_running_keeps_what_it_revoked(
    clean_db: AsyncEngine,
    database_url: str,
    pki: DevPkiPaths,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[Path], None],
    logged: str,
) -> None:
    revoked = tmp_path / "revoked.txt"
    revoked.write_text(f"{serial_of(pki.partner_cert)}\n")
    settings = revocation_settings(database_url, pki, revoked)
    async with running(clean_db, settings, pki) as wallet:
        alice = await wallet.sign_up("alice")
        a = await wallet.open_account(alice)
        assert await _deposit_outcome(wallet, a) == "UNAUTHENTICATED/CERTIFICATE_REVOKED"

        change(revoked)
        outcomes = []
        for _ in range(15):  # across more than one re-read window
            await asyncio.sleep(0.1)
            outcomes.append(await _deposit_outcome(wallet, a))

        assert set(outcomes) == {"UNAUTHENTICATED/CERTIFICATE_REVOKED"}
        assert await balance(wallet, alice, a) == 0
        assert any(
            r.levelno == logging.WARNING and logged in r.getMessage() for r in caplog.records
        )


def test_a_malformed_revocation_file_stops_the_server_from_starting(
    database_url: str, pki: DevPkiPaths, tmp_path: Path
) -> None:
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("0x1f\nnot-a-serial\n")

    with pytest.raises(ConfigError, match=r"revoked.txt:2: not a certificate serial number"):
        revocation_settings(database_url, pki, revoked)


async def test_every_rpc_refuses_the_anonymous_and_lets_its_own_kind_of_caller_through(
    wallet: Wallet,
) -> None:
    """The policy table, checked against the contract: no RPC is reachable without the
    identity it needs, and none is closed to the identity it is for."""
    alice = await wallet.sign_up("alice")
    services = [
        (auth_pb2, "AuthService", alice, wallet.ports.public, None),
        (wallet_pb2, "WalletService", alice, wallet.ports.public, None),
        (partner_pb2, "PartnerService", (), wallet.ports.mtls, "partner"),
        (admin_pb2, "AdminService", (), wallet.ports.mtls, "admin"),
    ]
    public_methods = {"Register", "Login", "VerifySecondFactor", "RefreshSession"}
    anonymous = channel(wallet.ports.public, wallet.pki)
    wallet.channels.append(anonymous)
    checked = 0
    for module, service, metadata, port, cert in services:
        if cert == "partner":
            own = mtls(wallet, wallet.pki.partner_cert, wallet.pki.partner_key)
        elif cert == "admin":
            own = mtls(wallet, wallet.pki.admin_cert, wallet.pki.admin_key)
        else:
            own = channel(port, wallet.pki)
            wallet.channels.append(own)
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            path = f"/wallet.v1.{service}/{method.name}"
            if method.name == "Logout":
                continue  # would end alice's session for the methods after it
            as_nobody = await _call_code(anonymous, path, (), method.server_streaming)
            as_owner = await _call_code(own, path, metadata, method.server_streaming)
            if method.name in public_methods:
                assert as_nobody not in {"UNAUTHENTICATED", "PERMISSION_DENIED"}, path
            else:
                assert as_nobody == "UNAUTHENTICATED/CREDENTIALS_MISSING", path
            assert not as_owner.startswith(("UNAUTHENTICATED", "PERMISSION_DENIED")), (
                path,
                as_owner,
            )
            checked += 1
    assert checked > 40


async def _call_code(ch: aio.Channel, path: str, metadata: Metadata, streaming: bool) -> str:
    """Call with an empty request; the outcome as CODE/REASON (or OK)."""
    identity = lambda data: data  # noqa: E731 (raw bytes in and out)
    try:
        if streaming:
            call = ch.unary_stream(
                path, request_serializer=identity, response_deserializer=identity
            )(b"", metadata=metadata, timeout=5)
            async for _ in call:
                break
            call.cancel()
        else:
            await ch.unary_unary(path, request_serializer=identity, response_deserializer=identity)(
                b"", metadata=metadata, timeout=5
            )
    except aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "OK"  # a stream that waits for events: it was let in
        err = rich_error(exc)
        return f"{err.code.name}/{err.reason}"
    return "OK"


# --- signing in ---------------------------------------------------------------------------


async def test_wrong_password_and_unknown_user_get_the_same_answer(wallet: Wallet) -> None:
    await wallet.sign_up("alice")
    auth = wallet.auth

    wrong = await refusal(
        auth.Login(auth_pb2.LoginRequest(username="alice", password="not the password"))
    )
    unknown = await refusal(
        auth.Login(auth_pb2.LoginRequest(username="nobody", password="not the password"))
    )

    assert what(wrong) == (UNAUTHENTICATED, "INVALID_CREDENTIALS", DOMAIN)
    assert what(unknown) == what(wrong)
    assert unknown.message == wrong.message
    assert unknown.violations == wrong.violations == {}
    assert (await audited(wallet))[2:] == [
        ("AuthService/Login", "UNAUTHENTICATED"),
        ("AuthService/Login", "UNAUTHENTICATED"),
    ]


async def test_repeated_failures_lock_the_account_until_the_lockout_passes(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths
) -> None:
    clock = FakeClock()
    settings = make_settings(database_url, pki, login_lockout_seconds=600)
    assert settings.login_max_failures == 3
    async with running(clean_db, settings, pki, clock) as wallet:
        await wallet.sign_up("alice")
        auth = wallet.auth

        def login(password: str) -> Awaitable[auth_pb2.LoginResponse]:
            return auth.Login(auth_pb2.LoginRequest(username="alice", password=password))

        for _ in range(3):
            err = await refusal(login("not the password"))
            assert what(err) == (UNAUTHENTICATED, "INVALID_CREDENTIALS", DOMAIN)
        locked = await refusal(login(PASSWORD))
        assert what(locked) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", DOMAIN)

        clock.advance(timedelta(seconds=599))
        still = await refusal(login(PASSWORD))
        assert what(still) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", DOMAIN)

        clock.advance(timedelta(seconds=2))
        assert (await login(PASSWORD)).tokens.access_token
        assert [
            code for method, code in await audited(wallet) if method == "AuthService/Login"
        ] == [
            "OK",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RESOURCE_EXHAUSTED",
            "RESOURCE_EXHAUSTED",
            "OK",
        ]


async def test_an_unknown_name_is_rate_limited_after_as_many_failures_as_a_real_one(
    wallet: Wallet,
) -> None:
    await wallet.sign_up("alice")
    auth = wallet.auth
    answers: dict[str, list[tuple[grpc.StatusCode, str, str, str]]] = {"alice": [], "nobody": []}
    for name, answer in answers.items():
        for password in ["not the password"] * 3 + [PASSWORD]:
            err = await refusal(auth.Login(auth_pb2.LoginRequest(username=name, password=password)))
            answer.append((*what(err), err.message))

    assert answers["alice"] == answers["nobody"]
    assert [a[:2] for a in answers["nobody"]] == [
        (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    ]
    # Nor does the audit trail tell them apart: anonymous, no user named.
    failed = [e for e in await audit_trail(wallet) if e.code != "OK"]
    assert len(failed) == 8
    assert {(e.principal, tuple(e.resource_ids)) for e in failed} == {("anonymous", ())}
    assert [e.code for e in failed] == (["UNAUTHENTICATED"] * 3 + ["RESOURCE_EXHAUSTED"]) * 2


async def test_overlong_password_or_username_is_refused_before_any_hashing(
    wallet: Wallet,
) -> None:
    await wallet.sign_up("alice")
    auth = wallet.auth

    long_password = await refusal(
        auth.Login(auth_pb2.LoginRequest(username="alice", password="x" * 1_000_000))
    )
    long_name = await refusal(auth.Login(auth_pb2.LoginRequest(username="a" * 65, password="x")))

    assert what(long_password) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", DOMAIN)
    assert set(long_password.violations) == {"password"}
    assert what(long_name) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", DOMAIN)
    assert set(long_name.violations) == {"username"}
    # Nothing was counted against the name: three wrong passwords are still needed to lock it.
    for _ in range(2):
        await refusal(auth.Login(auth_pb2.LoginRequest(username="alice", password="wrong!")))
    assert (await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))).tokens
    assert [code for method, code in await audited(wallet) if method == "AuthService/Login"] == [
        "OK",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        "OK",
    ]


async def test_a_slow_sign_in_does_not_hold_up_the_users_other_calls(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths
) -> None:
    # Strong argon2 (about a second here), so that the verification is slow.
    settings = make_settings(database_url, pki, password_time_cost=30, password_memory_kib=65536)
    async with running(clean_db, settings, pki) as wallet:
        alice = await wallet.sign_up("alice")
        auth, accounts = wallet.auth, wallet.wallet
        await refusal(auth.GetMe(auth_pb2.GetMeRequest()))  # both channels connected now
        await accounts.ListAccounts(wallet_pb2.ListAccountsRequest(), metadata=alice)
        for password, currency in ((PASSWORD, "EUR"), ("not the password", "JPY")):
            login = asyncio.ensure_future(
                auth.Login(auth_pb2.LoginRequest(username="alice", password=password))
            )
            try:
                await asyncio.sleep(0.25)  # the login is verifying the password now
                assert not login.done()
                # Opening an account references (key-share locks) the user's row: it must not
                # wait for the sign-in.
                await accounts.OpenAccount(
                    wallet_pb2.OpenAccountRequest(
                        request_id=str(uuid.uuid4()), currency_code=currency
                    ),
                    metadata=alice,
                )
                # Ordering, not a stopwatch: the account opened while the login still verified.
                assert not login.done(), "the account was only opened after the login"
            finally:
                outcome = await asyncio.gather(login, return_exceptions=True)
            if password == PASSWORD:
                assert isinstance(outcome[0], auth_pb2.LoginResponse)
            else:
                assert isinstance(outcome[0], aio.AioRpcError)
                assert what(rich_error(outcome[0])) == (
                    UNAUTHENTICATED,
                    "INVALID_CREDENTIALS",
                    DOMAIN,
                )
        listed = await accounts.ListAccounts(wallet_pb2.ListAccountsRequest(), metadata=alice)
        assert {a.currency_code for a in listed.accounts} == {"EUR", "JPY"}


async def test_get_me_returns_the_signed_in_user(wallet: Wallet) -> None:
    registered = await wallet.auth.Register(
        auth_pb2.RegisterRequest(username="Alice", password=PASSWORD, display_name="Alice A.")
    )
    login = await wallet.auth.Login(
        auth_pb2.LoginRequest(username="ALICE", password=PASSWORD, device_name="phone")
    )

    me = (
        await wallet.auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(login.tokens.access_token))
    ).user

    assert me == registered.user
    assert (me.username, me.display_name) == ("alice", "Alice A.")
    trail = await audit_trail(wallet)
    assert trail[-1].method == "/wallet.v1.AuthService/GetMe"
    assert trail[-1].principal == f"user:{me.user_id}"


async def test_no_password_or_token_reaches_the_audit_trail_or_the_logs(
    wallet: Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wallet_server")
    auth = wallet.auth
    await auth.Register(
        auth_pb2.RegisterRequest(username="alice", password=PASSWORD, display_name="Alice")
    )
    login = await auth.Login(
        auth_pb2.LoginRequest(username="alice", password=PASSWORD, device_name="phone")
    )
    wrong_password = "hunter2-wrong-guess"
    await refusal(auth.Login(auth_pb2.LoginRequest(username="alice", password=wrong_password)))
    await refusal(auth.Login(auth_pb2.LoginRequest(username="bob", password=wrong_password)))
    access, refresh = login.tokens.access_token, login.tokens.refresh_token
    tampered = flip_signature(access)
    await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(access))
    await refusal(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tampered)))
    rotated = await auth.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=refresh))
    reused = await refusal(
        auth.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=refresh))
    )
    assert reused.reason == "REFRESH_TOKEN_REUSED"

    secrets = [
        PASSWORD,
        wrong_password,
        access,
        refresh,
        tampered,
        rotated.tokens.access_token,
        rotated.tokens.refresh_token,
        access.rsplit(".", 1)[1],  # the signature on its own
    ]
    trail = await audit_trail(wallet)
    assert len(trail) == 8
    audit_text = "\n".join(str(e) for e in trail)
    log_text = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records
    )
    assert any("AuthService/Login" in r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in audit_text
        assert secret not in log_text
    assert "Bearer" not in audit_text + log_text
