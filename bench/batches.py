"""Batched transfers: ``PartnerService.CreateTransfers`` over mutual TLS as the demo partner.

Each call moves ``batch_size`` items of 1 minor unit from the partner's USD settlement
account to random benchmark accounts (non-atomic batch, a fresh ``request_id`` per batch and
per item). Every item must succeed: a failed item counts as an error of its batch.

With ``disjoint``, each batch in flight keeps to accounts of its own (the task's
destinations dealt out among its slots), so no two batches wait on each other's rows.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass

from grpc import aio
from wallet.v1 import partner_pb2, partner_pb2_grpc

from bench.client import DEMO_PARTNER, Target, close, connect, usd
from bench.loop import Done, LoadResult, Operation, UnexpectedResult, Window, closed_loop


@dataclass(frozen=True)
class BatchTask:
    target: Target
    batch_size: int
    in_flight: int
    channels: int
    window: Window
    settlement_account_id: str
    destinations: tuple[str, ...]
    disjoint: bool = False


def run_batches(task: BatchTask) -> LoadResult:
    return asyncio.run(_batches(task))


def batch_request(
    size: int, source: str, destinations: tuple[str, ...], rng: random.Random
) -> partner_pb2.CreateTransfersRequest:
    return partner_pb2.CreateTransfersRequest(
        request_id=str(uuid.uuid4()),
        transfers=[
            partner_pb2.TransferItem(
                request_id=str(uuid.uuid4()),
                from_account_id=source,
                to_account_id=rng.choice(destinations),
                amount=usd(1),
            )
            for _ in range(size)
        ],
    )


def check_results(response: partner_pb2.CreateTransfersResponse, size: int) -> None:
    failed = [r.error for r in response.results if r.HasField("error")]
    if failed:
        first = failed[0]
        raise UnexpectedResult(f"{len(failed)} failed item(s), e.g. {first.code}/{first.reason}")
    if len(response.results) != size:
        raise UnexpectedResult(f"{len(response.results)} results for {size} items")


def batch_operation(channels: list[aio.Channel], task: BatchTask) -> Operation:
    stubs = [partner_pb2_grpc.PartnerServiceStub(ch) for ch in channels]
    rng = random.Random()  # noqa: S311 - picks destinations, not secrets

    def destinations(slot: int) -> tuple[str, ...]:
        return task.destinations[slot :: task.in_flight] if task.disjoint else task.destinations

    async def call(slot: int) -> Done:
        request = batch_request(
            task.batch_size, task.settlement_account_id, destinations(slot), rng
        )
        response = await stubs[slot % len(stubs)].CreateTransfers(request)
        check_results(response, task.batch_size)
        return Done(kind="batch", items=task.batch_size)

    return call


async def _batches(task: BatchTask) -> LoadResult:
    channels = await connect(task.target, task.channels, identity=DEMO_PARTNER)
    try:
        return await closed_loop(batch_operation(channels, task), task.in_flight, task.window)
    finally:
        await close(channels)
