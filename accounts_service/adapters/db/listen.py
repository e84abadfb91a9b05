"""LISTEN on a dedicated connection, with psycopg's errors turned into Unavailable."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from accounts_service.adapters.db.pool import Conn
from accounts_service.errors import Unavailable


@contextlib.asynccontextmanager
async def listening(
    dsn: str, channel: str, application_name: str
) -> AsyncIterator[AsyncIterator[str]]:
    """The payloads NOTIFYed on `channel` from now on, read from an autocommit connection of
    its own (not from the pool: reading notifications holds it); `application_name` names it
    in pg_stat_activity. Unavailable when it cannot connect, or once the connection breaks.
    The connection closes with the block."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name=application_name
        )
    except psycopg.Error as exc:
        raise Unavailable(f"cannot listen on {channel!r}: {exc}") from exc
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield _payloads(conn, channel)
    except psycopg.Error as exc:
        raise Unavailable(f"listening on {channel!r} stopped: {exc}") from exc
    finally:
        await conn.close()


async def _payloads(conn: Conn, channel: str) -> AsyncIterator[str]:
    try:
        async for notify in conn.notifies():
            yield notify.payload
    except psycopg.Error as exc:
        raise Unavailable(f"listening on {channel!r} stopped: {exc}") from exc
