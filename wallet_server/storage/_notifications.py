"""LISTEN/NOTIFY: wake-ups from PostgreSQL, so nothing has to poll in a tight loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from wallet_server.storage._cancellation import raise_if_cancelling

_log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "wallet_outbox"  # a writer committed events (sent by a trigger on outbox)


def libpq_url(url: str) -> str:
    """psycopg wants a libpq URL, without SQLAlchemy's driver suffix."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


async def listen_forever(
    url: str,
    channels: Iterable[str],
    on_notify: Callable[[str, str], None],
    *,
    on_connected: Callable[[], None] = lambda: None,
) -> None:
    """Deliver every notification on ``channels`` to ``on_notify(channel, payload)``.

    Reconnects with a pause when the connection drops; ``on_connected`` runs after each
    (re)connect, since notifications sent while disconnected are lost.
    """
    names = list(channels)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(url), autocommit=True
            ) as conn:
                for name in names:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                on_connected()
                async for notification in conn.notifies():
                    on_notify(notification.channel, notification.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection lost or refused: try again shortly
            raise_if_cancelling(exc)
            _log.warning("event listener disconnected (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(1.0)
