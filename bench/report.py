"""Rows, ratios and the printed table of a benchmark run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# What one "call" is, per scenario family, for the JSON report.
DEFINITIONS = {
    "calls_per_s": "completed calls per second; latency columns are per call",
    "transfers_per_s": "money movements per second (batch items; deposits plus payments)",
    "vs_empty_rpc": "transfers/s (or calls/s where nothing moves) over the empty RPC's "
    "calls/s at the same concurrency",
    "vs_pgbench": "transfers/s (or calls/s) over pgbench's single-statement transfers/s at "
    "the same concurrency",
    "empty RPC (health)": "grpc.health.v1.Health/Check, public TLS port",
    "Transfer (spread)": "WalletService.Transfer of 1 minor unit between random accounts of "
    "all benchmark users",
    "CreateTransfers xN": "one call = one PartnerService.CreateTransfers batch of N items "
    "(demo partner settlement account -> random users, non-atomic, mutual TLS)",
    "CreateTransfers xN, disjoint": "the same batches, but each batch in flight credits only "
    "accounts of its own (the users dealt out among the batches in flight), so batches never "
    "wait on each other's rows",
    "hot mix": "one call = one money movement: half Deposit by the demo partner into random "
    "users (1 RPC, debits ONE settlement account), half payment to ONE merchant "
    "(CreateOrder by the merchant then PayOrder by the user: 2 RPCs timed together)",
    "spread mix": "the hot mix's operations, but each Deposit by a random one of several "
    "depositing partners (the demo partner and the extra ones) and each payment to a random "
    "one of as many merchants, so no one settlement account takes all the movements",
    "hot / spread": "hot mix transfers/s over spread mix transfers/s at the same concurrency, "
    "measured in the same run",
    "WatchAccount delivery": "calls/s = events delivered per second to the active streams; "
    "latency = event arrival minus the Transfer's OK response (0 if the event came first)",
    "server_cpu_pct": "CPU of the server process tree (workers included, PostgreSQL not) "
    "during the measured window; 100 = one core",
    "db_cpu_pct": "CPU of the embedded PostgreSQL (postmaster, backends, background "
    "processes) during the window; absent for an external database. A backend that exits in "
    "the window is counted only once the postmaster has reaped it, so it can read a little low",
    "host_cpu_pct": "CPU of the whole machine during the window (server, database, client "
    "processes and anything else); 100 = one core, so a 2-core machine is full at 200",
    "server_rss_mib": "resident memory of the server process tree at the window's end",
    "in_flight_check": "calls/s x mean latency / concurrency; about 1 at steady state, "
    "below 0.8 the latencies are flagged as taken before the queue filled",
}
STEADY_STATE_MIN = 0.8
LEGEND = (
    "one call = a health Check | a Transfer | a CreateTransfers batch (latency per batch) | "
    "hot / spread mix: a Deposit, or a payment = CreateOrder + PayOrder (hot: ONE depositing "
    "partner and ONE merchant; spread: the same mix over several of each) | WatchAccount: an event "
    "delivered (latency after the Transfer's OK). xfers/s = money movements per second; "
    "x empty, x pg = xfers/s (else calls/s) over the empty RPC's calls/s and pgbench's "
    "transfers/s at the same concurrency; cpu% and rss of the server process tree, db% of the "
    "embedded PostgreSQL, host% of the whole machine (100 = one core)."
)


@dataclass
class Row:
    scenario: str
    concurrency: int  # calls in flight; 0 where it does not apply
    calls_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    calls: int
    errors: int
    transfers_per_s: float | None = None
    vs_empty_rpc: float | None = None
    vs_pgbench: float | None = None
    server_cpu_pct: float | None = None
    server_rss_mib: float | None = None
    db_cpu_pct: float | None = None
    host_cpu_pct: float | None = None
    # calls/s x mean latency / concurrency: about 1 when the window saw a steady state (Little's
    # law for a closed loop); well below 1, the latencies are those of a queue still filling.
    in_flight_check: float | None = None

    @property
    def rate(self) -> float:
        """What the ratios compare: transfers/s where money moves, else calls/s."""
        return self.calls_per_s if self.transfers_per_s is None else self.transfers_per_s


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


def add_ratios(rows: list[Row]) -> None:
    """Each row against the empty RPC and pgbench rows of the same concurrency."""
    for conc in {r.concurrency for r in rows if r.concurrency}:
        same = [r for r in rows if r.concurrency == conc]
        empty = next((r for r in same if r.scenario.startswith("empty")), None)
        ceiling = next((r for r in same if r.scenario.startswith("pgbench")), None)
        for r in same:
            if empty and empty.calls_per_s:
                r.vs_empty_rpc = r.rate / empty.calls_per_s
            if ceiling and ceiling.calls_per_s:
                r.vs_pgbench = r.rate / ceiling.calls_per_s


def hot_vs_spread(rows: list[Row]) -> dict[str, float]:
    """hot mix / spread mix throughput, by concurrency."""
    found: dict[str, float] = {}
    for hot in (r for r in rows if r.scenario.startswith("hot mix")):
        spread = next(
            (
                r
                for r in rows
                if r.scenario.startswith("spread mix") and r.concurrency == hot.concurrency
            ),
            None,
        )
        if spread and spread.rate:
            found[str(hot.concurrency)] = hot.rate / spread.rate
    return found


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def fmt_rate(value: float | None) -> str:
    """Small rates (batches of 1000) keep their decimals."""
    if value is None or math.isnan(value):
        return "-"
    return format(value, ".2f" if value < 10 else ".1f" if value < 100 else ".0f")


def steady_state(row: Row, latencies_ms: list[float]) -> None:
    if row.concurrency and latencies_ms:
        mean_s = sum(latencies_ms) / len(latencies_ms) / 1000.0
        row.in_flight_check = row.calls_per_s * mean_s / row.concurrency


def warnings(rows: list[Row]) -> list[str]:
    return [
        f"note: {r.scenario} at {r.concurrency}: latencies taken before steady state "
        f"(calls/s x mean latency = {r.in_flight_check:.2f} of the {r.concurrency} in flight); "
        "the rate stands, a longer warm-up would show higher latencies"
        for r in rows
        if r.in_flight_check is not None and r.in_flight_check < STEADY_STATE_MIN
    ]


HEAD = (
    f"{'scenario':<32}{'conc':>5}{'calls/s':>9}{'xfers/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
    f"{'p99 ms':>9}{'errors':>7}{'x empty':>8}{'x pg':>7}{'cpu%':>6}{'db%':>5}{'host%':>6}"
    f"{'rss MiB':>8}"
)


def table_line(r: Row) -> str:
    conc = str(r.concurrency) if r.concurrency else "-"
    return (
        f"{r.scenario:<32}{conc:>5}{fmt_rate(r.calls_per_s):>9}{fmt_rate(r.transfers_per_s):>9}"
        f"{fmt(r.p50_ms, '.1f'):>9}{fmt(r.p95_ms, '.1f'):>9}{fmt(r.p99_ms, '.1f'):>9}"
        f"{r.errors:>7}{fmt(r.vs_empty_rpc, '.2f'):>8}{fmt(r.vs_pgbench, '.2f'):>7}"
        f"{fmt(r.server_cpu_pct, '.0f'):>6}{fmt(r.db_cpu_pct, '.0f'):>5}"
        f"{fmt(r.host_cpu_pct, '.0f'):>6}{fmt(r.server_rss_mib, '.0f'):>8}"
    )


def table(rows: list[Row]) -> str:
    return "\n".join([HEAD, "-" * len(HEAD), *(table_line(r) for r in rows)])


def clean(value: Any) -> Any:
    """NaN as null, recursively, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def row_json(r: Row) -> dict[str, Any]:
    data: dict[str, Any] = clean(asdict(r))
    return data
