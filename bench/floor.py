"""``python -m bench.floor [--seconds S]``: how fast a MINIMAL Python gRPC server moves money
on this machine, as ratios to its own empty call.

The wallet server's targets are ratios to its empty RPC; this tells how much of that is
within reach of Python at all. One tiny ``grpc.aio`` server (TLS, health ``Check`` as the
RPC; no authentication, idempotency, audit, events, logging or decisions) runs in one mode
at a time on the embedded PostgreSQL, driven by the benchmark's own client processes:

- ``empty``: answer at once (measured first and last: the machine drifts);
- ``single``: one single-statement transfer per call (pgbench's statement), pool of 10;
- ``grouped``: calls queue; one writer runs ONE statement per group of up to 512 calls
  (autocommit: one round trip and one commit per group) and then answers them all;
- ``grouped4``: the same in a transaction the way the wallet server writes a group: BEGIN,
  a locking read of the group's accounts, the write, COMMIT.

Then, without gRPC, the set-based ceiling of ``CreateTransfers``: client processes run the
``grouped`` statement on batches of 1000 random transfers (the same 400 accounts, as in
``make bench``), 1 and 16 batches in flight, against ``pgbench -M prepared`` at 16 clients
in the same run.

Nothing here checks balances: it is the ceiling of the architecture, not a wallet.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from bench import client, pg
from bench.loop import merge
from bench.report import percentile
from bench.server import pgbench_binary
from wallet_server.devdb import start_embedded_database
from wallet_server.security import ensure_dev_pki

__all__ = ["main"]

ACCOUNTS = 400
IN_FLIGHT = 16
MAX_GROUP = 512
MODES = ("empty", "single", "grouped", "grouped4", "empty")

# pgbench's statement with psycopg placeholders (its first two lines pick the accounts).
_SINGLE = pg.TRANSFER_SCRIPT.split("\n", 2)[2].replace(":src", "%(src)s").replace(":dst", "%(dst)s")
_LOCK = "SELECT id, balance FROM bench.accounts WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE"
# A group of transfers in one statement: legs, account locks in id order, balances, rows.
_GROUP = """
WITH pairs AS (
  SELECT p.src, p.dst, nextval('bench.tx_id_seq') AS tx_id
  FROM unnest(%(srcs)s::int[], %(dsts)s::int[]) AS p(src, dst)
), legs AS MATERIALIZED (
  SELECT tx_id, src AS id, -1::bigint AS d FROM pairs UNION ALL SELECT tx_id, dst, 1 FROM pairs
), locked AS (
  SELECT id FROM bench.accounts WHERE id IN (SELECT id FROM legs) ORDER BY id FOR UPDATE
), moved AS (
  UPDATE bench.accounts AS a SET balance = a.balance + s.d
  FROM (SELECT id, sum(d) AS d FROM legs GROUP BY id) AS s, (SELECT count(*) FROM locked) AS l
  WHERE a.id = s.id
), tx AS (
  INSERT INTO bench.tx (id, amount) SELECT DISTINCT tx_id, 1 FROM legs
)
INSERT INTO bench.postings (tx_id, account_id, amount) SELECT tx_id, id, d FROM legs
"""

Pair = tuple[int, int]


_rng = random.Random()  # noqa: S311 - picks accounts, not secrets


def _pair() -> Pair:
    src = _rng.randint(1, ACCOUNTS)
    return src, 1 + (src + _rng.randint(0, ACCOUNTS - 2)) % ACCOUNTS


class _Floor(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped base
    def __init__(self, mode: str, pool: AsyncConnectionPool[Any] | None) -> None:
        self._mode = mode
        self._pool = pool
        self._queue: list[tuple[Pair, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        if self._mode == "single":
            assert self._pool is not None
            src, dst = _pair()
            async with self._pool.connection() as conn:
                await conn.execute(_SINGLE, {"src": src, "dst": dst})
        elif self._mode != "empty":
            done = asyncio.get_running_loop().create_future()
            self._queue.append((_pair(), done))
            self._wake.set()
            await done
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def write_groups(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            await conn.set_autocommit(self._mode == "grouped")
            while True:
                await self._wake.wait()
                self._wake.clear()
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                if self._queue:
                    self._wake.set()
                if group:
                    await self._write(conn, [p for p, _ in group])
                for _, done in group:
                    if not done.done():  # the client gave up at the window's end
                        done.set_result(None)

    async def _write(self, conn: AsyncConnection[Any], pairs: list[Pair]) -> None:
        if self._mode == "grouped4":
            ids = sorted({account for p in pairs for account in p})
            await (await conn.execute(_LOCK, {"ids": ids})).fetchall()
        await conn.execute(_GROUP, {"srcs": [s for s, _ in pairs], "dsts": [d for _, d in pairs]})
        if self._mode == "grouped4":
            await conn.commit()


def _serve(mode: str, url: str, certs: Path, ready: Queue[int]) -> None:
    asyncio.run(_serve_async(mode, url, certs, ready))


async def _serve_async(mode: str, url: str, certs: Path, ready: Queue[int]) -> None:
    pool = None
    if mode != "empty":
        pool = AsyncConnectionPool(url, min_size=10, max_size=10, open=False)
        await pool.open(wait=True)
    floor = _Floor(mode, pool)
    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(floor, server)
    key, cert = (certs / "server-key.pem").read_bytes(), (certs / "server.pem").read_bytes()
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    writer = asyncio.create_task(floor.write_groups()) if mode.startswith("grouped") else None
    ready.put(port)
    try:
        await server.wait_for_termination()
    finally:
        if writer is not None:
            writer.cancel()


def _check_ledger(url: str) -> None:
    """Fast and wrong does not count: money is conserved and every transfer has two legs."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT sum(balance) FROM bench.accounts),"
            " (SELECT count(*) FROM bench.accounts),"
            " (SELECT count(*) FROM bench.tx),"
            " (SELECT count(*) FROM bench.postings),"
            " (SELECT coalesce(sum(amount), 0) FROM bench.postings)"
        ).fetchone()
    assert row is not None
    total, accounts, transfers, legs, net = row
    if total != accounts * pg.OPENING_BALANCE or legs != 2 * transfers or net != 0:
        raise RuntimeError(
            f"ledger check failed: balances sum to {total}, {transfers} transfers with "
            f"{legs} legs summing to {net}"
        )
    print(f"ledger check: {transfers} transfers, money conserved", flush=True)


BATCH_SIZE = 1000
BATCH_IN_FLIGHT = (1, 16)


@dataclass(frozen=True)
class _BatchTask:
    url: str
    connections: int
    start_at: float  # wall clock: the measured window opens one second later
    seconds: float


def _run_batches(task: _BatchTask) -> int:
    """Transfers made by the batches that complete inside the window."""
    return asyncio.run(_batches(task))


async def _batches(task: _BatchTask) -> int:
    measure_from = task.start_at + 1.0
    measure_to = measure_from + task.seconds
    done = 0

    async def one_connection() -> None:
        nonlocal done
        async with await AsyncConnection.connect(task.url, autocommit=True) as conn:
            await asyncio.sleep(max(0.0, task.start_at - time.time()))
            while time.time() < measure_to:
                pairs = [_pair() for _ in range(BATCH_SIZE)]
                await conn.execute(
                    _GROUP, {"srcs": [s for s, _ in pairs], "dsts": [d for _, d in pairs]}
                )
                if measure_from <= time.time() <= measure_to:
                    done += BATCH_SIZE

    await asyncio.gather(*(one_connection() for _ in range(task.connections)))
    return done


def _measure_batches(url: str, in_flight: int, seconds: float, clients: Any) -> float:
    processes = min(2, in_flight)
    start = time.time() + 2.0
    tasks = [_BatchTask(url, in_flight // processes, start, seconds) for _ in range(processes)]
    return float(sum(clients.map(_run_batches, tasks))) / seconds


@dataclass(frozen=True)
class _Measured:
    mode: str
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _measure(mode: str, url: str, certs: Path, seconds: float, clients: Any) -> _Measured:
    ctx = multiprocessing.get_context("spawn")
    ready: Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(mode, url, certs, ready))
    server.start()
    try:
        target = client.Target(ready.get(timeout=60), 0, certs)
        start = time.time() + 2.0  # room for the client processes to connect
        per_process = IN_FLIGHT // 2
        tasks = [
            client.LoadTask(target, "health", per_process, 2, start, 2.0, seconds) for _ in range(2)
        ]
        result = merge(clients.map(client.run_load, tasks))
    finally:
        server.terminate()
        server.join()
    latencies = sorted(result.latencies_ms)
    return _Measured(
        mode,
        result.calls / result.window_s,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        sum(result.errors.values()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per mode")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wallet-floor-"))
    database = start_embedded_database(work / "data")
    certs = work / "certs"
    ensure_dev_pki(certs)
    url = database.url()
    pg.prepare(url, ACCOUNTS)
    rows: list[_Measured] = []
    try:
        with multiprocessing.get_context("spawn").Pool(2) as clients:
            for mode in MODES:
                rows.append(_measure(mode, url, certs, args.seconds, clients))
                print(f"measured {mode}", flush=True)
            batches = {n: _measure_batches(url, n, args.seconds, clients) for n in BATCH_IN_FLIGHT}
        ceiling = pg.run(
            pgbench_binary(),
            url,
            workdir=work,
            clients=IN_FLIGHT,
            seconds=int(args.seconds),
            accounts=ACCOUNTS,
        )
        _check_ledger(url)
    finally:
        database.stop()
    empties = [r.calls_per_s for r in rows if r.mode == "empty"]
    empty = sum(empties) / len(empties)
    print(f"\nminimal grpc.aio server, TLS, {IN_FLIGHT} in flight, {ACCOUNTS} accounts")
    print(f"{'mode':10s} {'calls/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s} x empty")
    for r in rows:
        print(
            f"{r.mode:10s} {r.calls_per_s:8.0f} {r.p50_ms:7.1f} {r.p99_ms:7.1f} "
            f"{r.errors:6d} {r.calls_per_s / empty:7.2f}"
        )
    print(f"\nset-based statements of {BATCH_SIZE} transfers (no gRPC), {ACCOUNTS} accounts")
    print(f"pgbench -M prepared, {IN_FLIGHT} clients: {ceiling.tps:.0f} transfers/s")
    for n, rate in batches.items():
        print(f"{n:3d} in flight: {rate:8.0f} transfers/s = {rate / ceiling.tps:.2f} x pgbench")


if __name__ == "__main__":
    main()
