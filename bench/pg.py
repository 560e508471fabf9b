"""The raw PostgreSQL ceiling: one transfer as ONE SQL statement, driven by ``pgbench -M prepared``.

Scratch tables live in their own schema ``bench`` so the wallet schema is never touched.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

SCHEMA_DDL = """
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.accounts (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
CREATE TABLE bench.tx (id bigserial PRIMARY KEY, amount bigint NOT NULL,
                       created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bench.postings (tx_id bigint NOT NULL REFERENCES bench.tx (id),
                             account_id int NOT NULL REFERENCES bench.accounts (id),
                             amount bigint NOT NULL, PRIMARY KEY (tx_id, account_id));
"""

# One statement: lock both rows in id order (as a careful server would, so no deadlocks),
# debit (the CHECK constraint refuses a negative balance and aborts the whole statement),
# credit, the transaction row and its two postings.
TRANSFER_SCRIPT = r"""\set src random(1, :naccounts)
\set dst 1 + (:src + random(0, :naccounts - 2)) % :naccounts
WITH locked AS (
  SELECT id FROM bench.accounts
   WHERE id IN (CAST(:src AS int), CAST(:dst AS int)) ORDER BY id FOR UPDATE
), moved AS (
  UPDATE bench.accounts AS a
     SET balance = a.balance + CASE WHEN a.id = CAST(:src AS int) THEN -1 ELSE 1 END
    FROM locked WHERE a.id = locked.id
  RETURNING a.id
), tx AS (
  INSERT INTO bench.tx (amount) SELECT 1 WHERE (SELECT count(*) FROM moved) = 2 RETURNING id
)
INSERT INTO bench.postings (tx_id, account_id, amount)
SELECT tx.id, v.account_id, v.amount
  FROM tx, (VALUES (CAST(:src AS int), CAST(-1 AS bigint)),
                   (CAST(:dst AS int), CAST(1 AS bigint))) AS v (account_id, amount);
"""
OPENING_BALANCE = 1_000_000_000  # per account: no transfer of 1 ever runs one dry


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    retried: int
    latencies_ms: list[float]
    duration_s: float


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as a plain libpq URI."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def server_version(url: str) -> str:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"


def prepare(url: str, accounts: int) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(SCHEMA_DDL)
        conn.execute(
            "INSERT INTO bench.accounts (id, balance) "
            "SELECT g, %s FROM generate_series(1, %s) AS g",
            (OPENING_BALANCE, accounts),
        )
        conn.execute("VACUUM ANALYZE bench.accounts")


def drop(url: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")


def run(
    pgbench: Path,
    url: str,
    *,
    workdir: Path,
    clients: int,
    seconds: int,
    accounts: int,
    on_exit: Callable[[], None] = lambda: None,
) -> PgbenchResult:
    """Run pgbench's transfer script; ``on_exit`` runs as soon as pgbench has exited, before
    its logs are read."""
    script = workdir / "transfer.sql"
    script.write_text(TRANSFER_SCRIPT)
    prefix = workdir / f"pgbench-c{clients}"
    cmd = [
        str(pgbench),
        "-n",  # no vacuum of pgbench's own tables (we do not use them)
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(seconds),
        "-D",
        f"naccounts={accounts}",
        "--max-tries=10",
        "-l",
        f"--log-prefix={prefix}",
        "-f",
        str(script),
        libpq_url(url),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=workdir)
    on_exit()
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    out = proc.stdout
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    retried = re.search(r"number of transactions retried: (\d+)", out)
    latencies: list[float] = []
    for log in workdir.glob(f"{prefix.name}*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            # client_id transaction_no time_us script_no epoch epoch_us [retries]
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]) / 1000.0)
    return PgbenchResult(
        tps=float(tps.group(1)) if tps else 0.0,
        transactions=int(done.group(1)) if done else len(latencies),
        failed=int(failed.group(1)) if failed else 0,
        retried=int(retried.group(1)) if retried else 0,
        latencies_ms=latencies,
        duration_s=float(seconds),
    )
