"""The streams scenario's figures: memory per idle stream, delivery latency, the targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import streams
from bench.report import clean, fmt, percentile

TARGET_IDLE_STREAMS = 10_000
TARGET_RSS_MIB = 1024.0
TARGET_DELIVERY_P99_MS = 100.0


@dataclass
class StreamSummary:
    idle_target: int
    idle_opened: int
    active_opened: int
    open_s: float
    channels: int
    rss_mib: tuple[float, float, float]  # before opening, all open, after the active phase
    transfers: int
    deliveries: int
    before_ok: int
    idle_messages: int
    after_ok: list[float]
    from_send: list[float]
    rate_per_s: float

    @classmethod
    def of(
        cls,
        results: list[streams.StreamResult],
        idle_target: int,
        rss: tuple[float, float, float],
        tasks: list[streams.StreamTask],
    ) -> StreamSummary:
        return cls(
            idle_target=idle_target,
            idle_opened=sum(r.idle_opened for r in results),
            active_opened=sum(r.active_opened for r in results),
            open_s=max((r.open_s for r in results), default=0.0),
            channels=sum(t.channels for t in tasks),
            rss_mib=rss,
            transfers=sum(r.transfers for r in results),
            deliveries=sum(r.deliveries for r in results),
            before_ok=sum(r.before_ok for r in results),
            idle_messages=sum(r.idle_messages for r in results),
            after_ok=sorted(x for r in results for x in r.after_ok_ms),
            from_send=sorted(x for r in results for x in r.from_send_ms),
            rate_per_s=sum(t.rate_per_s for t in tasks),
        )

    @property
    def per_idle_stream_kib(self) -> float:
        before, opened, _ = self.rss_mib
        return 1024 * (opened - before) / self.idle_opened if self.idle_opened else float("nan")

    @property
    def rss_at_target_mib(self) -> float:
        """Memory with 10k idle streams: measured, or extrapolated from a reduced count."""
        before, opened, _ = self.rss_mib
        if self.idle_opened >= TARGET_IDLE_STREAMS:
            return opened
        return before + self.per_idle_stream_kib * TARGET_IDLE_STREAMS / 1024

    def quantiles(self, values: list[float]) -> dict[str, float]:
        return {f"p{int(q * 100)}": percentile(values, q) for q in (0.5, 0.95, 0.99)}

    def as_json(self) -> dict[str, Any]:
        measured = self.idle_opened >= TARGET_IDLE_STREAMS
        p99 = percentile(self.after_ok, 0.99)
        data = {
            "idle_streams": self.idle_target,
            "idle_streams_note": "full count" if measured else "reduced count",
            "idle_opened": self.idle_opened,
            "active_opened": self.active_opened,
            "open_seconds": self.open_s,
            "client_connections": self.channels,
            "server_rss_mib": dict(zip(("before", "all_open", "end"), self.rss_mib, strict=True)),
            "rss_per_idle_stream_kib": self.per_idle_stream_kib,
            f"rss_with_{TARGET_IDLE_STREAMS}_idle_mib": self.rss_at_target_mib,
            f"rss_with_{TARGET_IDLE_STREAMS}_idle_is": "measured" if measured else "extrapolated",
            "transfer_rate_target_per_s": self.rate_per_s,
            "transfers_measured": self.transfers,
            "deliveries": self.deliveries,
            "delivered_before_ok": self.before_ok,
            "idle_messages_after_first": self.idle_messages,
            "delivery_after_ok_ms": self.quantiles(self.after_ok),
            "delivery_from_send_ms": self.quantiles(self.from_send),
            "target_rss_under_mib": TARGET_RSS_MIB,
            "target_rss_met": self.rss_at_target_mib < TARGET_RSS_MIB,
            "target_delivery_p99_ms": TARGET_DELIVERY_P99_MS,
            "target_delivery_met": p99 < TARGET_DELIVERY_P99_MS,
        }
        return dict(clean(data))


def streams_block(s: dict[str, Any]) -> str:
    if not s:
        return ""
    rss = s["server_rss_mib"]
    at_target = s[f"rss_with_{TARGET_IDLE_STREAMS}_idle_mib"]
    after, send = s["delivery_after_ok_ms"], s["delivery_from_send_ms"]
    return "\n".join(
        [
            f"streams: {s['idle_opened']}/{s['idle_streams']} idle ({s['idle_streams_note']}) "
            f"+ {s['active_opened']} active WatchAccount, opened in {s['open_seconds']:.1f}s "
            f"over {s['client_connections']} connections",
            f"  server RSS MiB: {rss['before']:.0f} before, {rss['all_open']:.0f} all open, "
            f"{rss['end']:.0f} after transfers; {fmt(s['rss_per_idle_stream_kib'], '.1f')} "
            f"KiB per idle stream; with {TARGET_IDLE_STREAMS} idle: {fmt(at_target, '.0f')} "
            f"({s[f'rss_with_{TARGET_IDLE_STREAMS}_idle_is']}; target < {TARGET_RSS_MIB:.0f}: "
            f"{'met' if s['target_rss_met'] else 'NOT met'})",
            f"  delivery of {s['transfers_measured']} Transfers at "
            f"{s['transfer_rate_target_per_s']:.0f}/s ({s['deliveries']} events): after OK "
            f"p50 {fmt(after['p50'], '.1f')} p95 {fmt(after['p95'], '.1f')} p99 "
            f"{fmt(after['p99'], '.1f')} ms ({s['delivered_before_ok']} before the OK); from "
            f"send p50 {fmt(send['p50'], '.1f')} p99 {fmt(send['p99'], '.1f')} ms; target p99 "
            f"< {TARGET_DELIVERY_P99_MS:.0f} ms after OK: "
            f"{'met' if s['target_delivery_met'] else 'NOT met'}",
            f"  messages on idle streams after their first: {s['idle_messages_after_first']}",
        ]
    )
