"""``python -m bench.run [--quick] [--workers N]``: the benchmark of DESIGN.md's "Benchmark
contract".

The server runs as its own process (``wallet-server dev`` on port 0, embedded PostgreSQL unless
``WALLET_DATABASE_URL`` is set; ``--workers N`` is passed on when N > 1). Load comes from
spawned client processes, each with its own event loop and channels (one connection each).
Baselines measured in the same run: an empty unary RPC (health ``Check``) on the same server
and the raw PostgreSQL ceiling (``pgbench -M prepared``, one statement per transfer).

Scenarios: Transfer between many accounts; ``CreateTransfers`` batches of 100 and 1000 items;
a hot-account mix (deposits from ONE settlement account, payments to ONE merchant) and the
same mix spread over several depositing partners and merchants, at the same concurrency; and
streams (many idle ``WatchAccount`` streams plus active ones, with event delivery latency
and the server's memory). Exits non-zero if ``VerifyLedger`` finds violations or any request
failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing.managers import SyncManager
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

from bench import batches, client, hot, pg, streams
from bench.client import DEMO_PARTNER
from bench.loop import LoadResult, Window, merge
from bench.proc import host_busy_seconds
from bench.report import (
    DEFINITIONS,
    HEAD,
    LEGEND,
    Row,
    add_ratios,
    clean,
    fmt,
    hot_vs_spread,
    make_row,
    percentile,
    row_json,
    steady_state,
    table,
    warnings,
)
from bench.server import Server, pgbench_binary
from bench.stream_summary import TARGET_IDLE_STREAMS, StreamSummary, streams_block
from wallet_server.config import DEFAULT_MAX_STREAMS_PER_CALLER

__all__ = [
    "FULL",
    "QUICK",
    "Plan",
    "Row",
    "Server",
    "fmt",
    "main",
    "make_row",
    "percentile",
    "pgbench_binary",
    "table",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    name: str
    concurrency: tuple[int, ...]
    warmup_s: float
    duration_s: float
    pgbench_s: int
    users: int  # sign-ups (one funded USD account each), split across the client processes
    # (items per batch, warm-up s): queued batches of 1000 need a longer warm-up to reach a
    # steady state (batches from one settlement account run one after the other).
    batch_sizes: tuple[tuple[int, float], ...] = ((100, 2.0), (1000, 6.0))
    batch_concurrency: tuple[int, ...] = (16,)  # batches in flight; a subset of concurrency
    batch_duration_s: float = 4.0
    hot_concurrency: int = 16
    hot_warmup_s: float = 2.0
    hot_duration_s: float = 5.0
    spread_partners: int = 8  # extra depositing partners and merchants in the spread mix
    idle_streams: int = 2000
    active_streams: int = 100
    stream_transfers_per_s: float = 100.0  # paced, to the active streams' accounts
    stream_max_in_flight: int = 16  # per client process
    stream_warmup_s: float = 1.0
    stream_duration_s: float = 5.0
    stream_drain_s: float = 2.0


# A smoke run in about two minutes: every scenario, short windows, noisier figures.
QUICK = Plan(
    "quick",
    (16,),
    warmup_s=1.0,
    duration_s=4.0,
    pgbench_s=4,
    users=100,  # one active stream per user: the 100 the streams scenario asks for
    batch_sizes=((100, 1.0), (1000, 3.0)),
    batch_duration_s=3.0,
    hot_warmup_s=1.0,
    hot_duration_s=3.0,
    idle_streams=1000,
    stream_duration_s=3.0,
    stream_drain_s=1.0,
)
FULL = Plan(
    "full",
    (1, 16, 64),
    warmup_s=5.0,
    duration_s=20.0,
    pgbench_s=20,
    users=400,
    batch_sizes=((100, 5.0), (1000, 12.0)),
    batch_concurrency=(1, 16),
    batch_duration_s=15.0,
    hot_warmup_s=5.0,
    hot_duration_s=20.0,
    idle_streams=10_000,
    stream_warmup_s=5.0,
    stream_duration_s=20.0,
    stream_drain_s=3.0,
)
PROCESSES = 2  # client processes; this is a 2-core machine shared with the server
CHANNELS_PER_PROCESS = 2  # per server worker process
STREAM_CHANNELS_PER_PROCESS = 8  # per server worker process
START_SLACK_S = 2.0  # room for every client process to connect before the shared start
CONTROL_TIMEOUT_S = 300.0
TOKEN_REFRESH_S = 600.0  # the dev server's access tokens live 15 minutes


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


@dataclass
class Findings:
    """Everything the run found, for the report."""

    rows: list[Row] = field(default_factory=list)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    pgbench_retried: dict[str, int] = field(default_factory=dict)
    streams: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    failure: str | None = None
    pg_version: str = "unknown"
    server_processes: int = 0  # measured for CPU and memory: the server and its workers

    def add(self, row: Row, errors: dict[str, int]) -> None:
        self.rows.append(row)
        if errors:
            where = f" c={row.concurrency}" if row.concurrency else ""
            self.errors[f"{row.scenario.strip()}{where}"] = errors


@dataclass(frozen=True)
class Measured:
    result: LoadResult
    cpu_pct: float
    rss_mib: float
    db_cpu_pct: float | None  # the embedded PostgreSQL's; None for an external database
    host_cpu_pct: float  # every process on the machine, clients included


def one_after_the_other(first: Measured, second: Measured) -> Measured:
    """Two windows of the same scenario as one: counts added, rates over both windows'
    time, CPU weighted by each window's length."""
    a, b = first.result, second.result
    both = merge([a, b])
    both.window_s = a.window_s + b.window_s

    def weighted(x: float, y: float) -> float:
        return (x * a.window_s + y * b.window_s) / both.window_s if both.window_s else x

    db = (
        None
        if first.db_cpu_pct is None or second.db_cpu_pct is None
        else weighted(first.db_cpu_pct, second.db_cpu_pct)
    )
    return Measured(
        both,
        weighted(first.cpu_pct, second.cpu_pct),
        max(first.rss_mib, second.rss_mib),
        db,
        weighted(first.host_cpu_pct, second.host_cpu_pct),
    )


class Bench:
    """One run against one server: set-up, the scenarios in order, the ledger check."""

    def __init__(
        self, plan: Plan, server: Server, pool: Pool, workdir: Path, findings: Findings
    ) -> None:
        self.plan = plan
        self.server = server
        self.pool = pool
        self.workdir = workdir
        self.found = findings
        self.target = client.Target(0, 0, Path())
        self.url = ""
        self.holders: list[list[client.Holder]] = []
        self.tokens_at = 0.0
        self.settlement = ""

    @property
    def channels(self) -> int:
        return CHANNELS_PER_PROCESS * max(1, self.server.workers)

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(h.account_id for group in self.holders for h in group)

    # --- set-up ------------------------------------------------------------------------

    def start(self) -> None:
        print(f"bench ({self.plan.name}): starting server in {self.workdir}", flush=True)
        self.target = self.server.start()
        self.url = self.server.database_url()
        self.found.pg_version = pg.server_version(self.url)
        self.found.server_processes = self.server.usage().processes

    def prepare(self) -> None:
        per_process = self.plan.users // PROCESSES
        print(f"preparing {per_process * PROCESSES} users with funded accounts", flush=True)
        t0 = time.monotonic()
        setups = [
            client.SetupTask(self.target, f"bench{p}", per_process, 100_000_000)
            for p in range(PROCESSES)
        ]
        self.holders = self.pool.map(client.run_setup, setups, chunksize=1)
        self.tokens_at = time.monotonic()
        self.settlement = self.pool.apply(client.run_settlement_account, (self.target,))
        self.server.register_partners(
            {
                **dict.fromkeys(hot.extra_depositors(self.plan.spread_partners), "deposits"),
                **dict.fromkeys(
                    (hot.MERCHANT, *hot.extra_merchants(self.plan.spread_partners)), "merchant"
                ),
            }
        )
        pg.prepare(self.url, len(self.destinations))
        print(f"  done in {time.monotonic() - t0:.1f}s", flush=True)

    def fresh_tokens(self) -> None:
        """New access tokens for every user when the current ones are getting old."""
        if time.monotonic() - self.tokens_at < TOKEN_REFRESH_S:
            return
        args = [(self.target, group) for group in self.holders]
        self.holders = self.pool.starmap(client.run_refresh, args, chunksize=1)
        self.tokens_at = time.monotonic()

    # --- measuring ---------------------------------------------------------------------

    def window(self, warmup_s: float, duration_s: float) -> Window:
        return Window(time.time() + START_SLACK_S, warmup_s, duration_s)

    def measure(self, run: Callable[[Any], LoadResult], tasks: list[Any], w: Window) -> Measured:
        """Run ``tasks`` in the client processes; server, database and host CPU and server
        memory over the window."""
        pending = self.pool.map_async(run, tasks, chunksize=1)
        sleep_until(w.measure_from)
        u0, d0, h0 = self.server.usage(), self.server.database_cpu_seconds(), host_busy_seconds()
        t0 = time.monotonic()
        sleep_until(w.measure_to)
        u1, d1, h1 = self.server.usage(), self.server.database_cpu_seconds(), host_busy_seconds()
        span = time.monotonic() - t0
        result = merge(pending.get())
        return Measured(
            result,
            100 * (u1.cpu_s - u0.cpu_s) / span,
            u1.rss_mib,
            None if d0 is None or d1 is None else 100 * (d1 - d0) / span,
            100 * (h1 - h0) / span,
        )

    def row(self, label: str, conc: int, m: Measured, *, moves_money: bool) -> Row:
        r = m.result
        row = make_row(label, conc, r.calls, r.window_s, r.latencies_ms, sum(r.errors.values()))
        row.transfers_per_s = r.items / r.window_s if moves_money else None
        row.server_cpu_pct, row.server_rss_mib = m.cpu_pct, m.rss_mib
        row.db_cpu_pct, row.host_cpu_pct = m.db_cpu_pct, m.host_cpu_pct
        steady_state(row, r.latencies_ms)
        return row

    def shares(self, conc: int) -> list[int]:
        return [n for n in split(conc, min(PROCESSES, conc)) if n]

    # --- scenarios -----------------------------------------------------------------------

    def unary(self, scenario: str, conc: int) -> None:
        label = "empty RPC (health)" if scenario == "health" else "Transfer (spread)"
        print(f"running {label} at {conc} in flight...", flush=True)
        w = self.window(self.plan.warmup_s, self.plan.duration_s)
        tasks = [
            client.LoadTask(
                target=self.target,
                scenario=scenario,
                in_flight=n,
                channels=min(self.channels, n),
                start_at=w.start_at,
                warmup_s=w.warmup_s,
                duration_s=w.duration_s,
                holders=tuple(self.holders[i]) if scenario == "transfer" else (),
                destinations=self.destinations if scenario == "transfer" else (),
            )
            for i, n in enumerate(self.shares(conc))
        ]
        m = self.measure(client.run_load, tasks, w)
        self.found.add(
            self.row(label, conc, m, moves_money=scenario == "transfer"), m.result.errors
        )

    def batch(self, conc: int, size: int, warmup_s: float, *, disjoint: bool = False) -> None:
        """Batches to random accounts, or with ``disjoint`` each batch in flight to accounts
        no other batch touches."""
        label = f"CreateTransfers x{size}{', disjoint' if disjoint else ''}"
        print(f"running {label} at {conc} batches in flight...", flush=True)
        w = self.window(warmup_s, self.plan.batch_duration_s)
        shares = self.shares(conc)
        tasks = [
            batches.BatchTask(
                self.target,
                size,
                n,
                min(self.channels, n),
                w,
                self.settlement,
                self.destinations[i :: len(shares)] if disjoint else self.destinations,
                disjoint=disjoint,
            )
            for i, n in enumerate(shares)
        ]
        m = self.measure(batches.run_batches, tasks, w)
        self.found.add(self.row(label, conc, m, moves_money=True), m.result.errors)

    def payment_mixes(self, conc: int) -> None:
        """The hot mix and the spread mix, each in two windows, in the order hot, spread,
        spread, hot: the machine's speed drifts from one window to the next by more than the
        difference being measured, and this order gives both mixes the same share of a
        steady drift."""
        first_hot = self.mix_window(conc, spread=False)
        spread = [self.mix_window(conc, spread=True) for _ in range(2)]
        last_hot = self.mix_window(conc, spread=False)
        self.record_mix(conc, one_after_the_other(first_hot, last_hot), spread=False)
        self.record_mix(conc, one_after_the_other(*spread), spread=True)

    @staticmethod
    def mix_label(*, spread: bool) -> str:
        return f"{'spread' if spread else 'hot'} mix (Deposit|payment)"

    def mix_window(self, conc: int, *, spread: bool) -> Measured:
        """One window of the hot mix (one depositing partner, one merchant) or of the same
        operations spread over ``1 + spread_partners`` depositing partners and as many
        merchants."""
        print(f"running {self.mix_label(spread=spread)} at {conc} in flight...", flush=True)
        extra = self.plan.spread_partners if spread else 0
        depositors = (DEMO_PARTNER, *map(hot.identity, hot.extra_depositors(extra)))
        merchants = tuple(map(hot.identity, (hot.MERCHANT, *hot.extra_merchants(extra))))
        w = self.window(self.plan.hot_warmup_s, self.plan.hot_duration_s)
        tasks = [
            hot.HotTask(
                self.target,
                n,
                min(self.channels, n),
                w,
                tuple(self.holders[i]),
                self.destinations,
                depositors,
                merchants,
            )
            for i, n in enumerate(self.shares(conc))
        ]
        return self.measure(hot.run_hot, tasks, w)

    def record_mix(self, conc: int, m: Measured, *, spread: bool) -> None:
        label = self.mix_label(spread=spread)
        self.found.add(self.row(label, conc, m, moves_money=True), m.result.errors)
        for kind, name in (("deposit", "  of which Deposit"), ("payment", "  of which payment")):
            lat = m.result.by_kind.get(kind, [])
            part = make_row(name, 0, len(lat), m.result.window_s, lat, 0)
            part.transfers_per_s = part.calls_per_s
            self.found.rows.append(part)

    def pgbench(self, conc: int) -> None:
        print(f"running pgbench -M prepared -c {conc}...", flush=True)
        # The database's and the machine's CPU from pgbench's start to its exit (its connecting
        # included, reading its logs not): what one single-statement transfer costs PostgreSQL,
        # beside what ours cost it. The database's is read once its logs are read: at pgbench's
        # exit its backends are still exiting, and their CPU is in no process a moment long
        # (it read 7 % of a core at one client instead of about 70). Meanwhile it idles.
        ends: list[tuple[float, float]] = []
        d0, h0, t0 = self.server.database_cpu_seconds(), host_busy_seconds(), time.monotonic()
        res = pg.run(
            pgbench_binary(),
            self.url,
            workdir=self.workdir,
            clients=conc,
            seconds=self.plan.pgbench_s,
            accounts=len(self.destinations),
            on_exit=lambda: ends.append((host_busy_seconds(), time.monotonic())),
        )
        row = make_row(
            "pgbench 1-stmt transfer",
            conc,
            res.transactions,
            res.duration_s,
            res.latencies_ms,
            res.failed,
        )
        row.calls_per_s = row.transfers_per_s = res.tps
        (h1, t1), d1 = ends[0], self.server.database_cpu_seconds()
        span = t1 - t0
        row.db_cpu_pct = None if d0 is None or d1 is None else 100 * (d1 - d0) / span
        row.host_cpu_pct = 100 * (h1 - h0) / span
        self.found.pgbench_retried[str(conc)] = res.retried
        self.found.add(row, {"failed after 10 tries": res.failed} if res.failed else {})

    def at_concurrency(self, conc: int) -> None:
        self.fresh_tokens()
        self.unary("health", conc)
        self.unary("transfer", conc)
        if conc in self.plan.batch_concurrency:
            for size, warmup_s in self.plan.batch_sizes:
                self.batch(conc, size, warmup_s)
            if conc > 1:  # settles how many batches a process runs at a time
                size, warmup_s = self.plan.batch_sizes[-1]
                self.batch(conc, size, warmup_s, disjoint=True)
        if conc == self.plan.hot_concurrency:
            self.fresh_tokens()
            self.payment_mixes(conc)
        self.pgbench(conc)

    def verify(self) -> None:
        checked = self.pool.apply(client.run_verify, (self.target,))
        self.found.ledger = {
            "accounts_checked": checked.accounts,
            "transactions_checked": checked.transactions,
        }
        self.found.violations = checked.violations

    def run(self, manager: SyncManager) -> None:
        self.start()
        self.prepare()
        for conc in self.plan.concurrency:
            self.at_concurrency(conc)
        self.fresh_tokens()
        StreamsRun(self, manager).run()
        self.verify()
        pg.drop(self.url)


class StreamsRun:
    """The streams scenario: parent side of the open / measure / close hand-shake."""

    def __init__(self, bench: Bench, manager: SyncManager) -> None:
        self.bench = bench
        self.plan = bench.plan
        self.control = streams.Control(
            manager.Queue(), manager.Event(), manager.Event(), CONTROL_TIMEOUT_S
        )

    def tasks(self) -> list[streams.StreamTask]:
        b, plan = self.bench, self.plan
        processes = len(b.holders)
        idle, active = split(plan.idle_streams, processes), split(plan.active_streams, processes)
        channels = STREAM_CHANNELS_PER_PROCESS * max(1, b.server.workers)
        return [
            streams.StreamTask(
                target=b.target,
                holders=tuple(b.holders[i]),
                idle=idle[i],
                active=min(active[i], len(b.holders[i])),
                channels=channels,
                rate_per_s=plan.stream_transfers_per_s / processes,
                max_in_flight=plan.stream_max_in_flight,
                warmup_s=plan.stream_warmup_s,
                duration_s=plan.stream_duration_s,
                drain_s=plan.stream_drain_s,
                control=self.control,
            )
            for i in range(processes)
        ]

    def await_reports(self, pending: AsyncResult[Any], expected: int, what: str) -> None:
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        seen = 0
        while seen < expected:
            if pending.ready():  # a client process ended early: surface its exception
                self.control.proceed.set()
                self.control.release.set()
                pending.get()
                raise RuntimeError(f"stream clients ended before reporting '{what}'")
            if time.monotonic() > deadline:
                raise RuntimeError(f"stream clients did not report '{what}' in time")
            try:
                message, _ = self.control.reports.get(timeout=1.0)
            except queue.Empty:
                continue
            seen += message == what

    def run(self) -> None:
        tasks = self.tasks()
        label = "" if self.plan.idle_streams >= TARGET_IDLE_STREAMS else " (reduced count)"
        print(
            f"running streams: {self.plan.idle_streams} idle{label} + "
            f"{self.plan.active_streams} active WatchAccount...",
            flush=True,
        )
        server = self.bench.server
        before = server.usage()
        pending = self.bench.pool.map_async(streams.run_streams, tasks, chunksize=1)
        try:
            self.await_reports(pending, len(tasks), "open")
            time.sleep(1.0)  # let the server settle before reading its memory
            opened = server.usage()
            t0 = time.monotonic()
            self.control.proceed.set()
            self.await_reports(pending, len(tasks), "done")
            end, elapsed = server.usage(), time.monotonic() - t0
        finally:
            self.control.proceed.set()
            self.control.release.set()
        results: list[streams.StreamResult] = pending.get(timeout=CONTROL_TIMEOUT_S)
        cpu = 100 * (end.cpu_s - opened.cpu_s) / elapsed
        self.record(results, (before.rss_mib, opened.rss_mib, end.rss_mib), cpu, tasks)

    def record(
        self,
        results: list[streams.StreamResult],
        rss: tuple[float, float, float],
        cpu: float,
        tasks: list[streams.StreamTask],
    ) -> None:
        summary = StreamSummary.of(results, self.plan.idle_streams, rss, tasks)
        errors: dict[str, int] = {}
        for r in results:
            for key, count in r.errors.items():
                errors[key] = errors.get(key, 0) + count
        row = make_row(
            "WatchAccount delivery",
            0,
            summary.deliveries,
            self.plan.stream_duration_s,
            summary.after_ok,
            sum(errors.values()),
        )
        row.transfers_per_s = summary.transfers / self.plan.stream_duration_s
        row.server_cpu_pct, row.server_rss_mib = cpu, rss[2]
        self.bench.found.add(row, errors)
        self.bench.found.streams = summary.as_json()


HOT_TARGET = 0.8  # hot mix throughput over the spread mix's, at least


def hot_block(ratios: dict[str, float], partners: int) -> str:
    return "\n".join(
        textwrap.fill(
            f"hot / spread at {conc} in flight: {ratio:.2f} = hot mix movements/s (1 depositing "
            f"partner, 1 merchant) over spread mix movements/s (the same operations over "
            f"{partners} depositing partners and {partners} merchants); target >= {HOT_TARGET}: "
            f"{'met' if ratio >= HOT_TARGET else 'NOT met'}",
            width=len(HEAD),
            subsequent_indent="  ",
        )
        for conc, ratio in ratios.items()
    )


def versions(pg_version: str) -> dict[str, Any]:
    def commit() -> str:
        try:
            done = subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
            )
        except OSError:
            return "unknown"
        return done.stdout.strip() or "unknown"

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wallet-server": metadata.version("wallet-server"),
        "git_head": commit(),  # the working tree may differ
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
        "postgresql": pg_version,
    }


def settings(plan: Plan, workers: int) -> dict[str, Any]:
    return {
        **asdict(plan),
        "server_workers": workers,
        "client_processes": PROCESSES,
        "channels_per_process": CHANNELS_PER_PROCESS * workers,
        "stream_channels_per_process": STREAM_CHANNELS_PER_PROCESS * workers,
        "transfer_amount_minor": 1,
        "database": "WALLET_DATABASE_URL" if os.environ.get("WALLET_DATABASE_URL") else "embedded",
        "pgbench": "-M prepared -j 2 --max-tries=10, fsync on",
    }


def report(started: datetime, plan: Plan, workers: int, found: Findings) -> dict[str, Any]:
    return {
        "started": started.isoformat(),
        "mode": plan.name,
        "settings": settings(plan, workers),
        "server": {"workers": workers, "processes_measured": found.server_processes},
        "machine": versions(found.pg_version),
        "definitions": DEFINITIONS,
        "rows": [row_json(r) for r in found.rows],
        "hot_vs_spread": hot_vs_spread(found.rows),
        "streams": found.streams,
        "errors": found.errors,
        "pgbench_retried": found.pgbench_retried,
        "ledger": found.ledger,
        "ledger_violations": found.violations,
        "failure": found.failure,
    }


def print_outcome(found: Findings, plan: Plan) -> None:
    print()
    print(table(found.rows))
    print(textwrap.fill(LEGEND, width=len(HEAD)))
    blocks = (
        hot_block(hot_vs_spread(found.rows), 1 + plan.spread_partners),
        streams_block(found.streams),
    )
    for line in [*warnings(found.rows), *blocks]:
        if line:
            print(line)


def print_problems(found: Findings) -> None:
    for where, errors in found.errors.items():
        for message, count in errors.items():
            print(f"ERROR {where}: {count} x {message}")
    if found.ledger:
        print(
            f"VerifyLedger: {found.ledger['accounts_checked']} accounts, "
            f"{found.ledger['transactions_checked']} transactions, "
            f"{len(found.violations)} violations"
        )
    for v in found.violations:
        print(f"LEDGER VIOLATION: {v}")
    if found.failure:
        print(f"FAILED: {found.failure}")


def write_report(data: dict[str, Any], started: datetime, plan: Plan) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{plan.name}.json"
    out.write_text(json.dumps(clean(data), indent=2, allow_nan=False, default=str) + "\n")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 in flight, a few s per scenario")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server worker processes (passed to 'wallet-server dev --workers' when > 1)",
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        help=f"idle WatchAccount streams (default: {FULL.idle_streams} full, "
        f"{QUICK.idle_streams} quick)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.idle_streams is not None and args.idle_streams < 0:
        parser.error("--idle-streams must not be negative")
    return args


def chosen_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.idle_streams is not None:
        plan = replace(plan, idle_streams=args.idle_streams)
    return plan


def server_settings(plan: Plan) -> dict[str, str]:
    """What the plan needs beyond the server's defaults: each user holds its share of the idle
    streams and one active one, which may pass the per-caller limit when asked for many."""
    per_user = -(-plan.idle_streams // plan.users) + 1
    if per_user <= DEFAULT_MAX_STREAMS_PER_CALLER:
        return {}
    return {"WALLET_MAX_STREAMS_PER_CALLER": str(per_user)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = chosen_plan(args)
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-", dir="/tmp"))
    server = Server(tmp / "data", workers=args.workers, settings=server_settings(plan))
    found = Findings()
    ctx = multiprocessing.get_context("spawn")
    try:
        with ctx.Manager() as manager, ctx.Pool(PROCESSES) as pool:
            Bench(plan, server, pool, tmp, found).run(manager)
    except Exception as exc:  # report, still stop the server and write what we have
        found.failure = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    add_ratios(found.rows)
    print_outcome(found, plan)
    out = write_report(report(started, plan, args.workers, found), started, plan)
    print(f"\nwrote {out}")
    print_problems(found)
    failed = bool(found.failure or found.violations or found.errors)
    if failed and server.log.exists():
        # The server's own account of what went wrong outlives the temporary directory.
        kept_log = out.with_suffix(".server.log")
        shutil.copyfile(server.log, kept_log)
        print(f"server log: {kept_log}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
