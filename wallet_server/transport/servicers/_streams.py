"""Server-streaming RPCs: WalletService.WatchAccount and PartnerService.WatchEvents."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from wallet.v1 import partner_pb2, wallet_pb2

from wallet_server import services
from wallet_server.domain import InvalidArgument
from wallet_server.transport._mapping import event_to_proto, parse_uuid
from wallet_server.transport.servicers._deps import Servicers, partner_caller, user_caller
from wallet_server.transport.servicers._withdrawals import payout_destination_to_proto

Context = aio.ServicerContext[Any, Any]


def _cursor(value: int) -> int:
    if value < 0:
        raise InvalidArgument.for_field("after_sequence", "must not be negative")
    return value


class StreamsWallet:
    _deps: Servicers

    async def WatchAccount(
        self, request: wallet_pb2.WatchAccountRequest, context: Context
    ) -> AsyncIterator[wallet_pb2.WatchAccountResponse]:
        account_id = parse_uuid(request.account_id, "account_id")
        command = services.WatchAccount(
            caller=user_caller(),
            account_id=account_id,
            after_sequence=_cursor(request.after_sequence),
        )
        watched = services.watch_account(command, self._deps.uow(), self._deps.hub)
        async with contextlib.aclosing(watched) as items:
            async for item in items:
                yield wallet_pb2.WatchAccountResponse(
                    event=event_to_proto(item, watched_account=account_id)
                )


class StreamsPartner:
    _deps: Servicers

    async def WatchEvents(
        self, request: partner_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[partner_pb2.WatchEventsResponse]:
        command = services.WatchPartnerEvents(
            caller=partner_caller(), after_sequence=_cursor(request.after_sequence)
        )
        watched = services.watch_partner_events(
            command, self._deps.uow(), self._deps.hub, self._deps.secrets
        )
        async with contextlib.aclosing(watched) as items:
            async for found in items:
                event = event_to_proto(found.item)
                if found.payout_destination is not None:
                    event.payout_destination.CopyFrom(
                        payout_destination_to_proto(found.payout_destination)
                    )
                yield partner_pb2.WatchEventsResponse(event=event)
