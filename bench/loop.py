"""The closed-loop driver shared by every unary scenario (runs in the client processes).

``in_flight`` slots each send one call, wait for its answer and send the next, from a wall
clock start shared by all client processes, through a warm-up, until the end of the measured
window. A call counts when it completes inside the window (so long calls that straddle the
window's edges do not bias the rate); every error counts wherever it happens, warm-up
included, because no error is expected. At the window's end the calls still in flight are
cancelled (as a client deadline would): their outcome falls outside the window, and waiting
for a queue of large batches would only lengthen the run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from grpc import aio


@dataclass(frozen=True)
class Done:
    """What one successful call did: its kind (for mixes) and how many transfers it made."""

    kind: str = "call"
    items: int = 1


class UnexpectedResult(Exception):
    """A call answered OK but not as expected (e.g. failed items in a batch)."""


Operation = Callable[[int], Awaitable[Done]]  # slot number -> one call


@dataclass
class LoadResult:
    calls: int = 0  # completed successfully inside the measured window
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0
    items: int = 0  # transfers made by the counted calls
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # latencies per kind


@dataclass(frozen=True)
class Window:
    start_at: float  # wall clock (time.time) when warm-up begins
    warmup_s: float
    duration_s: float

    @property
    def measure_from(self) -> float:
        return self.start_at + self.warmup_s

    @property
    def measure_to(self) -> float:
        return self.measure_from + self.duration_s


def error_key(exc: Exception) -> str:
    if isinstance(exc, aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"[:160]
    return f"{type(exc).__name__}: {exc}"[:160]


async def closed_loop(operation: Operation, in_flight: int, window: Window) -> LoadResult:
    result = LoadResult(window_s=window.duration_s)
    errors: Counter[str] = Counter()

    async def slot(number: int) -> None:
        while time.time() < window.measure_to:
            t0 = time.perf_counter()
            try:
                done = await operation(number)
            except (aio.AioRpcError, UnexpectedResult) as exc:
                errors[error_key(exc)] += 1
                continue
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            if window.measure_from <= time.time() <= window.measure_to:
                result.calls += 1
                result.items += done.items
                result.latencies_ms.append(elapsed_ms)
                result.by_kind.setdefault(done.kind, []).append(elapsed_ms)

    await asyncio.sleep(max(0.0, window.start_at - time.time()))
    slots = [asyncio.create_task(slot(i)) for i in range(in_flight)]
    await asyncio.wait(slots, timeout=max(0.0, window.measure_to - time.time()))
    for task in slots:
        task.cancel()
    for outcome in await asyncio.gather(*slots, return_exceptions=True):
        if isinstance(outcome, Exception):  # a bug in the benchmark, not a request error
            raise outcome
    result.errors = dict(errors)
    return result


def merge(results: list[LoadResult]) -> LoadResult:
    """One result from the client processes' results."""
    total = LoadResult(window_s=max((r.window_s for r in results), default=0.0))
    errors: Counter[str] = Counter()
    for r in results:
        total.calls += r.calls
        total.items += r.items
        total.latencies_ms.extend(r.latencies_ms)
        errors.update(r.errors)
        for kind, values in r.by_kind.items():
            total.by_kind.setdefault(kind, []).extend(values)
    total.errors = dict(errors)
    return total
