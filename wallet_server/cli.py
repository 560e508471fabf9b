"""``wallet-server dev | serve | migrate | certs``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from wallet_server._logging import configure_logging
from wallet_server._workers import (
    OnServing,
    StartupError,
    WorkerError,
    run_server,
    worker_count,
)
from wallet_server.config import ConfigError, Settings, load_settings
from wallet_server.devdb import DevDatabaseError, EmbeddedDatabase, start_embedded_database

DEMO_PARTNER = "demo"
DEMO_OPERATOR = "admin"


def _dev_keys(data_dir: Path) -> dict[str, str]:
    """Signing and encryption keys for dev, kept in the data dir so sessions survive restarts."""
    path = data_dir / "dev-keys.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    keys = {
        "token_keys": "dev1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "token_active_key_id": "dev1",
        "secret_keys": "dev1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "secret_active_key_id": "dev1",
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(keys))
    return keys


def _dev_settings(args: argparse.Namespace, data_dir: Path, database_url: str) -> Settings:
    from wallet_server.security import ensure_dev_pki

    pki = ensure_dev_pki(data_dir / "certs")
    defaults: dict[str, Any] = {
        "database_url": database_url,
        "host": "127.0.0.1",
        "port": 50051,
        "mtls_port": 50052,
        "tls_cert_file": str(pki.server_cert),
        "tls_key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca_cert),
        **_dev_keys(data_dir),
    }
    env = {k: v for k, v in os.environ.items() if k != "WALLET_DATABASE_URL"}
    settings = load_settings(None, env=env, defaults=defaults)
    # Flags given on the command line beat the environment.
    flags = {
        name: value
        for name, value in (("port", args.port), ("mtls_port", args.mtls_port))
        if value is not None
    }
    return dataclasses.replace(settings, **flags) if flags else settings


def _grpcurl_help(data_dir: Path, public: int, mtls: int) -> str:
    certs = data_dir / "certs"
    # The venv ships grpcurl; show the path that works without activating it.
    bundled = Path(sys.executable).parent / "grpcurl"
    grpcurl = str(bundled) if bundled.exists() and not shutil.which("grpcurl") else "grpcurl"
    template = resources.files("wallet_server").joinpath("_banner.txt").read_text()
    return template.format(
        grpcurl=grpcurl,
        tls=f"-cacert {certs}/ca.pem",
        partner=f"-cert {certs}/partner-demo.pem -key {certs}/partner-demo-key.pem",
        admin=f"-cert {certs}/admin.pem -key {certs}/admin-key.pem",
        pub=f"127.0.0.1:{public}",
        mt=f"127.0.0.1:{mtls}",
    )


def _seed_dev(database_url: str) -> None:
    from wallet_server.domain import ALL_PARTNER_SCOPES
    from wallet_server.services import UnitOfWork, register_operator, register_partner
    from wallet_server.storage import create_engine

    async def seed() -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            await register_operator(UnitOfWork(engine), DEMO_OPERATOR)
            await register_partner(UnitOfWork(engine), DEMO_PARTNER, ALL_PARTNER_SCOPES)
        finally:
            await engine.dispose()

    asyncio.run(seed())


def _announcer(
    ready_file: Path | None, banner: Callable[[int, int], str] | None = None
) -> OnServing:
    """What to do once the server serves: print the banner, then write the ready file."""

    def announce(public: int, mtls: int) -> None:
        if banner is not None:
            print(banner(public, mtls), flush=True)
        if ready_file is not None:
            # Written whole under another name, then renamed: a reader never sees half of it.
            partial = ready_file.with_name(ready_file.name + ".partial")
            partial.write_text(json.dumps({"port": public, "mtls_port": mtls}))
            partial.replace(ready_file)

    return announce


def _run_migrations(url: str) -> None:
    from wallet_server.storage import migrate

    try:
        migrate(url)
    except Exception as exc:
        raise StartupError(f"database migration failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def cmd_dev(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedDatabase | None = None
    url = os.environ.get("WALLET_DATABASE_URL")
    try:
        if not url:
            embedded = start_embedded_database(data_dir)
            url = embedded.url()
        settings = _dev_settings(args, data_dir, url)
        configure_logging(settings.log_level)
        _run_migrations(settings.database_url)
        # Once, before any worker starts: workers only serve.
        _seed_dev(settings.database_url)
        announce = _announcer(
            _ready_file(args), lambda public, mtls: _grpcurl_help(data_dir, public, mtls)
        )
        run_server(settings, workers=_workers_for(settings, args.workers), on_serving=announce)
    finally:
        if embedded is not None:
            embedded.stop()


def _workers_for(settings: Settings, requested: int | None) -> int:
    from wallet_server.storage import connection_limit, connections_per_process

    try:
        limit = connection_limit(settings.database_url)
    except Exception as exc:
        raise StartupError(f"cannot reach the database: {_one_line(exc)}") from None
    return worker_count(
        requested,
        cores=os.cpu_count() or 1,
        per_worker=connections_per_process(settings.database_pool_size),
        database_limit=limit,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from wallet_server.storage import schema_is_current

    settings = load_settings(Path(args.config) if args.config else None)
    configure_logging(settings.log_level)
    try:
        current = schema_is_current(settings.database_url)
    except Exception as exc:
        raise StartupError(f"cannot reach the database: {_one_line(exc)}") from None
    if not current:
        raise StartupError("the database schema is not current; run 'wallet-server migrate'")
    workers = _workers_for(settings, args.workers)
    run_server(settings, workers=workers, on_serving=_announcer(_ready_file(args)))


def _ready_file(args: argparse.Namespace) -> Path | None:
    return Path(args.ready_file) if args.ready_file else None


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return count


def _database_url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("WALLET_DATABASE_URL")
    if not url and args.config:
        url = load_settings(Path(args.config)).database_url
    if not url:
        raise StartupError("no database: pass --database-url or set WALLET_DATABASE_URL")
    return str(url)


def cmd_migrate(args: argparse.Namespace) -> None:
    url = _database_url(args)
    configure_logging("INFO")
    _run_migrations(url)
    print("database schema is current")


def cmd_register(args: argparse.Namespace) -> None:
    """Register a partner or operator: the first operator cannot be added over the API."""
    from wallet_server.domain import ALL_PARTNER_SCOPES
    from wallet_server.security import operator_spiffe_id, partner_spiffe_id
    from wallet_server.services import UnitOfWork, register_operator, register_partner
    from wallet_server.storage import create_engine

    url = _database_url(args)
    if args.command == "register-partner":
        scopes = {s.strip() for s in args.scopes.split(",") if s.strip()}
        unknown = scopes - ALL_PARTNER_SCOPES
        if unknown:
            known = ", ".join(sorted(ALL_PARTNER_SCOPES))
            raise StartupError(f"unknown scope(s) {', '.join(sorted(unknown))}; known: {known}")
        spiffe_id = partner_spiffe_id(args.name)
    else:
        spiffe_id = operator_spiffe_id(args.name)

    async def register() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            if args.command == "register-partner":
                await register_partner(UnitOfWork(engine), args.name, scopes)
            else:
                await register_operator(UnitOfWork(engine), args.name)
        finally:
            await engine.dispose()

    asyncio.run(register())
    print(f"registered {spiffe_id}; its client certificate must carry this URI SAN")


def cmd_certs(args: argparse.Namespace) -> None:
    from wallet_server.security import (
        ensure_dev_pki,
        issue_certificate,
        operator_spiffe_id,
        partner_spiffe_id,
    )

    out = Path(args.dir).expanduser().resolve()
    if args.certs_command == "init":
        paths = ensure_dev_pki(out)
        print(f"CA and certificates in {paths.ca_cert.parent}")
        return
    if args.partner is not None:
        kind, name = "partner", args.partner
    else:
        kind, name = "operator", args.operator
    spiffe_id = partner_spiffe_id(name) if kind == "partner" else operator_spiffe_id(name)
    stem = f"{kind}-{name}" if kind == "partner" else name
    out_cert, out_key = out / f"{stem}.pem", out / f"{stem}-key.pem"
    _refuse_to_overwrite_another(out_cert, out_key, spiffe_id)
    issue_certificate(
        ca_cert_path=out / "ca.pem",
        ca_key_path=out / "ca-key.pem",
        out_cert=out_cert,
        out_key=out_key,
        spiffe_id=spiffe_id,
    )
    print(f"issued {out / (stem + '.pem')} for {spiffe_id}")


def _refuse_to_overwrite_another(cert: Path, key: Path, spiffe_id: str) -> None:
    """Files already there may only be this identity's own certificate and key: an operator
    named ``server``, ``ca-key`` or ``partner-demo`` would otherwise replace the server's
    certificate (which a running server reloads), the CA's key or a partner's files."""
    from wallet_server.security import key_fits_certificate, peer_certificate_from_pem

    if not cert.exists() and not key.exists():
        return
    try:
        pem = cert.read_bytes()
        # The key file too: another identity's certificate may sit where this key goes.
        owned = peer_certificate_from_pem(pem).spiffe_id == spiffe_id and (
            not key.exists() or key_fits_certificate(key.read_bytes(), pem)
        )
    except (OSError, ValueError, TypeError):
        owned = False
    if not owned:
        raise ValueError(
            f"{cert.name} or {key.name} already exists in {cert.parent} and is not "
            f"{spiffe_id}'s certificate and key; choose another name (or remove leftovers)"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="zero set-up server: embedded PostgreSQL, dev certificates")
    dev.add_argument("--port", type=int, help="public TLS port, default 50051 (0: any free)")
    dev.add_argument("--mtls-port", type=int, help="mutual-TLS port, default 50052 (0: any free)")
    dev.add_argument("--data-dir", default=".wallet-dev", help="database, certificates, keys")
    dev.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="server processes sharing both ports, default 1",
    )
    dev.add_argument("--ready-file", help=argparse.SUPPRESS)
    dev.set_defaults(handler=cmd_dev)

    serve = sub.add_parser("serve", help="run with a configuration file and WALLET_* env")
    serve.add_argument("--config", help="TOML file (settings may also come from WALLET_* env)")
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="server processes sharing both ports, default one per CPU core as far as the "
        "database's max_connections allows; each may open database_pool_size + 1 "
        "connections",
    )
    serve.add_argument("--ready-file", help=argparse.SUPPRESS)
    serve.set_defaults(handler=cmd_serve)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.add_argument("--database-url", help="default: WALLET_DATABASE_URL or --config's")
    mig.add_argument("--config", help="TOML file to take database_url from")
    mig.set_defaults(handler=cmd_migrate)

    for kind in ("partner", "operator"):
        reg = sub.add_parser(
            f"register-{kind}", help=f"register a {kind} by name (its certificate's SPIFFE ID)"
        )
        reg.add_argument("name", help="lower-case letters, digits and '-'")
        if kind == "partner":
            reg.add_argument(
                "--scopes", required=True, help="comma-separated, e.g. deposit,payouts"
            )
        reg.add_argument("--database-url", help="default: WALLET_DATABASE_URL or --config's")
        reg.add_argument("--config", help="TOML file to take database_url from")
        reg.set_defaults(handler=cmd_register)

    certs = sub.add_parser("certs", help="a private CA and certificates for partners/operators")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init", help="create a CA, a server and demo client certs")
    init.add_argument("--dir", default=".wallet-dev/certs")
    issue = certs_sub.add_parser("issue", help="issue a client certificate from the CA in --dir")
    issue.add_argument("--dir", default=".wallet-dev/certs")
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--partner", help="partner name (spiffe://wallet/partner/<name>)")
    who.add_argument("--operator", help="operator name (spiffe://wallet/operator/<name>)")
    certs.set_defaults(handler=cmd_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except (ConfigError, DevDatabaseError, StartupError, WorkerError, ValueError, OSError) as exc:
        print(f"wallet-server: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
