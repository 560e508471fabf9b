"""``wallet-server dev`` as a real process on its embedded PostgreSQL, driven by real grpcurl.

Exactly what a user does after ``make run``: every call goes through the grpcurl binary over
TLS (public port, bearer token) or mutual TLS (mTLS port, the dev partner/operator
certificates). The child gets no ``WALLET_*`` variable, so it starts its own database.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import (
    READY_TIMEOUT,
    Grpcurl,
    ServerProcess,
    child_env,
    kill_postgres,
    postgres_processes,
    wallet_server_command,
)

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
STOP_WITHIN = 15.0  # seconds from SIGTERM to exit, database stop included


def start_dev(data_dir: Path, work: Path) -> ServerProcess:
    return ServerProcess.start(
        ["dev", "--data-dir", str(data_dir), "--port", "0", "--mtls-port", "0"],
        log_dir=work / "logs",
        ready_file=work / "ready.json",
    )


def minor(money: dict[str, Any]) -> int:
    """grpcurl prints int64 as a string and omits zero values."""
    return int(money.get("amount_minor", "0"))


def usd(amount_minor: int) -> dict[str, Any]:
    return {"currency_code": "USD", "amount_minor": str(amount_minor)}


def request_id() -> str:
    return str(uuid.uuid4())


def stop_cleanly(server: ServerProcess, data_dir: Path) -> float:
    """SIGTERM: exit code 0 in time, and the embedded PostgreSQL is gone. Returns seconds."""
    started = time.monotonic()
    code = server.terminate(STOP_WITHIN)
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code}; stderr:\n{server.stderr}"
    assert "Traceback" not in server.stderr, server.stderr
    left = [p.pid for p in postgres_processes(data_dir)]
    assert left == [], f"embedded PostgreSQL still running after exit: pids {left}"
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL was not shut down"
    return elapsed


class Session:
    """grpcurl against one running dev server, with its dev certificates."""

    def __init__(self, certs: Path, ports: dict[str, int]) -> None:
        self.certs = certs
        self.grpcurl = Grpcurl(certs / "ca.pem")
        self.public = f"127.0.0.1:{ports['port']}"
        self.mtls = f"127.0.0.1:{ports['mtls_port']}"

    def user(self, method: str, data: dict[str, Any], token: str | None = None) -> Any:
        return self.grpcurl.call(self.public, method, data, token=token)

    def partner(self, method: str, data: dict[str, Any]) -> Any:
        return self.grpcurl.call(
            self.mtls,
            method,
            data,
            cert=self.certs / "partner-demo.pem",
            key=self.certs / "partner-demo-key.pem",
        )

    def admin(self, method: str, data: dict[str, Any]) -> Any:
        return self.grpcurl.call(
            self.mtls, method, data, cert=self.certs / "admin.pem", key=self.certs / "admin-key.pem"
        )

    def login(self, username: str) -> str:
        answer = self.user(
            "wallet.v1.AuthService/Login",
            {"username": username, "password": PASSWORD, "device_name": "grpcurl"},
        )
        token: str = answer["tokens"]["access_token"]
        assert token
        return token

    def sign_up(self, username: str) -> str:
        registered = self.user(
            "wallet.v1.AuthService/Register",
            {"username": username, "password": PASSWORD, "display_name": username.title()},
        )
        assert registered["user"]["username"] == username
        return self.login(username)

    def open_usd(self, token: str) -> str:
        answer = self.user(
            "wallet.v1.WalletService/OpenAccount",
            {"request_id": request_id(), "currency_code": "USD"},
            token,
        )
        account_id: str = answer["account"]["account_id"]
        return account_id

    def balances(self, token: str, account_id: str) -> tuple[int, int, int]:
        answer = self.user("wallet.v1.WalletService/GetAccount", {"account_id": account_id}, token)
        account = answer["account"]
        assert account["account_id"] == account_id
        return minor(account["posted"]), minor(account["pending_out"]), minor(account["available"])


def test_dev_server_money_path_over_grpcurl_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "wallet-dev"
    certs = data_dir / "certs"

    server = start_dev(data_dir, tmp_path)
    try:
        ports = server.wait_ready()
        s = Session(certs, ports)
        assert s.public in server.stdout, "the banner shows the public address to paste"
        assert postgres_processes(data_dir), "the embedded PostgreSQL runs in the data dir"

        listed = s.grpcurl.run(s.public, "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {
            "wallet.v1.AuthService",
            "wallet.v1.WalletService",
            "wallet.v1.PartnerService",
            "wallet.v1.AdminService",
            "grpc.health.v1.Health",
        } <= services
        assert any(name.startswith("grpc.reflection.") for name in services), services
        assert s.user("grpc.health.v1.Health/Check", {}) == {"status": "SERVING"}

        alice, bob = s.sign_up("alice"), s.sign_up("bob")
        alice_usd, bob_usd = s.open_usd(alice), s.open_usd(bob)

        deposit = s.partner(
            "wallet.v1.PartnerService/Deposit",
            {
                "request_id": request_id(),
                "account_id": alice_usd,
                "amount": usd(10_000),
                "external_reference": "psp-0001",
            },
        )["transaction"]
        assert (deposit["status"], deposit["kind"]) == (
            "TRANSACTION_STATUS_POSTED",
            "TRANSACTION_KIND_DEPOSIT",
        )
        assert deposit["to_account_id"] == alice_usd
        assert minor(deposit["amount"]) == 10_000

        transfer = s.user(
            "wallet.v1.WalletService/Transfer",
            {
                "request_id": request_id(),
                "from_account_id": alice_usd,
                "to_account_id": bob_usd,
                "amount": usd(2_500),
                "memo": "dinner",
            },
            alice,
        )["transaction"]
        assert (transfer["status"], transfer["kind"]) == (
            "TRANSACTION_STATUS_POSTED",
            "TRANSACTION_KIND_TRANSFER",
        )
        history = s.user(
            "wallet.v1.WalletService/ListTransactions",
            {"account_id": bob_usd, "page_size": 10},
            bob,
        )
        assert [t["transaction_id"] for t in history["transactions"]] == [
            transfer["transaction_id"]
        ]
        assert s.balances(alice, alice_usd) == (7_500, 0, 7_500)
        assert s.balances(bob, bob_usd) == (2_500, 0, 2_500)

        too_much = s.grpcurl.run(
            s.public,
            "wallet.v1.WalletService/Transfer",
            data={
                "request_id": request_id(),
                "from_account_id": alice_usd,
                "to_account_id": bob_usd,
                "amount": usd(1_000_000),
            },
            token=alice,
        )
        assert too_much.returncode != 0
        assert "Code: FailedPrecondition" in too_much.stderr, too_much.stderr
        assert '"reason":"INSUFFICIENT_FUNDS"' in too_much.stderr, too_much.stderr
        assert '"domain":"wallet.v1"' in too_much.stderr, too_much.stderr

        partner_rpc_on_public_port = s.grpcurl.run(
            s.public,
            "wallet.v1.PartnerService/Deposit",
            data={"request_id": request_id(), "account_id": alice_usd, "amount": usd(1)},
            cert=certs / "partner-demo.pem",
            key=certs / "partner-demo-key.pem",
        )
        assert partner_rpc_on_public_port.returncode != 0
        assert "Code: Unauthenticated" in partner_rpc_on_public_port.stderr

        audit_as_partner = s.grpcurl.run(
            s.mtls,
            "wallet.v1.AdminService/GetAuditLog",
            data={"page_size": 5},
            cert=certs / "partner-demo.pem",
            key=certs / "partner-demo-key.pem",
        )
        assert audit_as_partner.returncode != 0
        assert "Code: PermissionDenied" in audit_as_partner.stderr, audit_as_partner.stderr

        entries = s.admin("wallet.v1.AdminService/GetAuditLog", {"page_size": 100})["entries"]
        outcomes = {(e["method"], e["code"]) for e in entries}
        assert {
            ("/wallet.v1.AuthService/Register", "OK"),
            ("/wallet.v1.PartnerService/Deposit", "OK"),
            ("/wallet.v1.WalletService/Transfer", "OK"),
            ("/wallet.v1.WalletService/Transfer", "FAILED_PRECONDITION"),
            ("/wallet.v1.PartnerService/Deposit", "UNAUTHENTICATED"),
            ("/wallet.v1.AdminService/GetAuditLog", "PERMISSION_DENIED"),
        } <= outcomes, outcomes
        assert all(e["method"].startswith("/") for e in entries)

        ca_before = (certs / "ca.pem").read_bytes()
        stop_cleanly(server, data_dir)

        server = start_dev(data_dir, tmp_path)
        s = Session(certs, server.wait_ready())
        assert (certs / "ca.pem").read_bytes() == ca_before, "the dev CA must be reused"
        assert s.balances(s.login("alice"), alice_usd) == (7_500, 0, 7_500)
        assert s.balances(bob, bob_usd) == (2_500, 0, 2_500), "tokens survive a restart"
        stop_cleanly(server, data_dir)
    finally:
        server.kill()
        kill_postgres(data_dir)


def test_dev_server_says_so_in_one_line_when_its_port_is_taken(tmp_path: Path) -> None:
    data_dir = tmp_path / "wallet-dev"
    ready_file = tmp_path / "ready.json"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            started = time.monotonic()
            done = subprocess.run(
                [
                    *wallet_server_command(),
                    "dev",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(port),
                    "--mtls-port",
                    "0",
                    "--ready-file",
                    str(ready_file),
                ],
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=READY_TIMEOUT,
                check=False,
            )
            elapsed = time.monotonic() - started
            assert done.returncode != 0
            assert "Traceback" not in done.stderr, done.stderr
            errors = [
                line for line in done.stderr.splitlines() if line.startswith("wallet-server:")
            ]
            assert len(errors) == 1, done.stderr
            assert errors[0].startswith("wallet-server: error: cannot listen on")
            assert f"127.0.0.1:{port}" in errors[0]
            assert done.stderr.rstrip().endswith(errors[0]), "the error is the last word"
            assert not ready_file.exists()
            assert (data_dir / "pgdata" / "PG_VERSION").exists(), "its database was started"
            assert not (data_dir / "pgdata" / "postmaster.pid").exists()
            assert elapsed < READY_TIMEOUT
            left = [p.pid for p in postgres_processes(data_dir)]
            assert left == [], f"embedded PostgreSQL still running after the failure: {left}"
        finally:
            kill_postgres(data_dir)
