"""``wallet-server serve --config`` and ``migrate`` as an operator runs them: real processes.

A bad or missing setting stops start-up with exactly one line on stderr and no traceback; a
complete configuration serves TLS (checked with the real grpcurl) and stops cleanly.
"""

from __future__ import annotations

import base64
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import (
    READY_TIMEOUT,
    Grpcurl,
    ServerProcess,
    child_env,
    wallet_server_command,
)
from wallet_server.security import DevPkiPaths

pytestmark = pytest.mark.e2e

FAIL_WITHIN = 30.0  # seconds; a configuration error must not need a database or a network


def run_cli(*args: str, timeout: float = FAIL_WITHIN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*wallet_server_command(), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
        check=False,
    )


def key_ring(kid: str, fill: bytes) -> str:
    return f"{kid}:{base64.b64encode(fill * 32).decode()}"


def complete_config(database_url: str, pki: DevPkiPaths) -> str:
    return "\n".join(
        [
            f'database_url = "{database_url}"',
            f'tls_cert_file = "{pki.server_cert}"',
            f'tls_key_file = "{pki.server_key}"',
            f'client_ca_file = "{pki.ca_cert}"',
            f'token_keys = "{key_ring("t1", b"t")}"',
            'token_active_key_id = "t1"',
            f'secret_keys = "{key_ring("s1", b"s")}"',
            'secret_active_key_id = "s1"',
            'host = "127.0.0.1"',
            "port = 0",
            "mtls_port = 0",
            "shutdown_grace_seconds = 1.0",
            "",
        ]
    )


def assert_one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    assert lines[0].startswith("wallet-server: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    done = run_cli("serve", "--config", str(missing))
    assert_one_error_line(done, "config file not found", str(missing))


def test_unknown_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "wallet.toml"
    config.write_text('port = 50051\nlisten_adress = "0.0.0.0"\n')
    done = run_cli("serve", "--config", str(config))
    assert_one_error_line(done, "unknown setting", "listen_adress")


def test_missing_required_settings_are_one_line_naming_each(tmp_path: Path) -> None:
    config = tmp_path / "wallet.toml"
    config.write_text('host = "127.0.0.1"\nport = 50051\n')
    done = run_cli("serve", "--config", str(config))
    assert_one_error_line(
        done, "missing setting", "database_url (or WALLET_DATABASE_URL)", "token_keys"
    )


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "wallet.toml"
    config.write_text("port = \n")
    done = run_cli("serve", "--config", str(config))
    assert_one_error_line(done, "not valid TOML", str(config))


def test_unreachable_database_is_one_line(tmp_path: Path, pki: DevPkiPaths) -> None:
    config = tmp_path / "wallet.toml"
    url = f"postgresql://postgres@/nowhere?host={tmp_path / 'no-socket'}"
    config.write_text(complete_config(url, pki))
    done = run_cli("serve", "--config", str(config))
    assert_one_error_line(done, "cannot reach the database")


def test_more_workers_than_the_database_connections_serve_is_one_line(
    tmp_path: Path, database_url: str, pki: DevPkiPaths
) -> None:
    config = tmp_path / "wallet.toml"
    config.write_text(complete_config(database_url, pki))
    done = run_cli("serve", "--config", str(config), "--workers", "1000")
    assert done.returncode == 2, done
    # Before it, the schema check's log lines (JSON); the refusal is the one error line.
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("wallet-server: error: 1000 worker(s) may open"), errors[0]
    assert "max_connections" in errors[0]


@pytest.mark.parametrize("setting", ["port", "mtls_port"])
def test_a_port_another_server_listens_on_is_refused_not_shared(
    tmp_path: Path, database_url: str, pki: DevPkiPaths, setting: str
) -> None:
    # Another server that, like this one, sets SO_REUSEPORT: the kernel would let both listen.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        config = tmp_path / "wallet.toml"
        config.write_text(
            complete_config(database_url, pki).replace(f"\n{setting} = 0", f"\n{setting} = {taken}")
        )
        done = run_cli("serve", "--config", str(config), "--workers", "1")
    assert done.returncode == 2, done
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{taken}" in errors[0], errors[0]
    assert "another server running" in errors[0]


def test_serve_with_a_complete_config_answers_health_and_stops_on_sigterm(
    tmp_path: Path, database_url: str, pki: DevPkiPaths
) -> None:
    config = tmp_path / "wallet.toml"
    config.write_text(complete_config(database_url, pki))
    server = ServerProcess.start(
        ["serve", "--config", str(config)],
        log_dir=tmp_path / "logs",
        ready_file=tmp_path / "ready.json",
    )
    try:
        ports = server.wait_ready(READY_TIMEOUT)
        assert ports["port"] != ports["mtls_port"]
        grpcurl = Grpcurl(pki.ca_cert)
        health = grpcurl.call(f"127.0.0.1:{ports['port']}", "grpc.health.v1.Health/Check")
        assert health == {"status": "SERVING"}
        mtls_health = grpcurl.call(
            f"127.0.0.1:{ports['mtls_port']}",
            "grpc.health.v1.Health/Check",
            cert=pki.admin_cert,
            key=pki.admin_key,
        )
        assert mtls_health == {"status": "SERVING"}
        assert server.terminate() == 0, server.stderr
        assert "Traceback" not in server.stderr, server.stderr
        assert server.stdout == "", "serve prints no dev banner"
    finally:
        server.kill()


def test_migrate_reports_a_current_schema(database_url: str) -> None:
    done = run_cli("migrate", "--database-url", database_url, timeout=READY_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "database schema is current"


def test_certs_issue_refuses_a_name_whose_files_belong_to_another(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert run_cli("certs", "init", "--dir", str(certs)).returncode == 0
    kept = {p.name: p.read_bytes() for p in certs.iterdir()}

    refused = [
        run_cli("certs", "issue", "--dir", str(certs), "--operator", name)
        for name in ("server", "ca-key", "admin-key")
    ]
    empty = run_cli("certs", "issue", "--dir", str(certs), "--partner", "")
    untouched = {p.name: p.read_bytes() for p in certs.iterdir()}
    again = run_cli("certs", "issue", "--dir", str(certs), "--operator", "admin")
    new = run_cli("certs", "issue", "--dir", str(certs), "--partner", "acme")

    for done in refused:
        assert_one_error_line(done, "already exists", "choose another name")
    assert_one_error_line(empty, "invalid identity name ''")
    assert untouched == kept
    assert again.returncode == 0, again.stderr  # an identity's own files are renewed
    assert new.returncode == 0, new.stderr
    assert (certs / "partner-acme.pem").exists()


def test_certs_issue_refuses_when_another_certificate_sits_where_the_key_goes(
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs"
    assert run_cli("certs", "init", "--dir", str(certs)).returncode == 0
    assert run_cli("certs", "issue", "--dir", str(certs), "--operator", "foo").returncode == 0
    (certs / "foo-key.pem").rename(tmp_path / "foo-key.pem")  # moved away, as keys are
    assert run_cli("certs", "issue", "--dir", str(certs), "--operator", "foo-key").returncode == 0
    kept = (certs / "foo-key.pem").read_bytes()  # operator foo-key's certificate

    done = run_cli("certs", "issue", "--dir", str(certs), "--operator", "foo")

    assert_one_error_line(done, "already exists", "choose another name")
    assert (certs / "foo-key.pem").read_bytes() == kept


def test_certs_issue_without_a_ca_is_one_line(tmp_path: Path) -> None:
    done = run_cli("certs", "issue", "--dir", str(tmp_path / "empty"), "--partner", "acme")
    assert_one_error_line(done, "ca.pem")


def test_a_config_path_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    done = run_cli("serve", "--config", str(tmp_path))
    assert_one_error_line(done, str(tmp_path))
