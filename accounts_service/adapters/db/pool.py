"""The PostgreSQL connection pool, where psycopg's errors become ours, and the migrations.

No caller holds a connection, a row lock or an open transaction across a call to S3 or NATS:
each use case reads and reserves in one short block, talks to the network with no connection,
then commits in another short block (users.py, background/relay.py, background/cleaner.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from accounts_service.errors import AccountsError, DatabaseFault, Overloaded, Unavailable

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
_MIGRATION_LOCK = 0x61766174  # pg_advisory_xact_lock key: several replicas may start at once
POOL_RETRY_AFTER_SECONDS = 1.0  # each use case holds a connection for milliseconds
UNAVAILABLE = "database unavailable, retry later"


def translated(exc: psycopg.Error) -> AccountsError:
    """Ours for a psycopg error: Unavailable when the server cannot be reached or the connection
    broke (retrying may succeed), DatabaseFault for a statement it refused (a bug of ours)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        log.warning("database unavailable", extra={"error": str(exc)})
        return Unavailable(UNAVAILABLE)
    log.error("database refused a statement", extra={"error": str(exc)})
    return DatabaseFault("the database refused a statement")


def conninfo_secrets(value: str) -> tuple[str, str] | None:
    """The password and sslpassword in a libpq URL or conninfo string ("" if absent); None if
    libpq cannot parse it. No connection is made, and no more is said: libpq's message quotes
    the part it could not parse, which may be the password."""
    try:
        conninfo = conninfo_to_dict(value)
    except psycopg.Error:
        return None
    return str(conninfo.get("password") or ""), str(conninfo.get("sslpassword") or "")


class Pool(AsyncConnectionPool[Conn]):
    """The connection pool, failing fast instead of queueing without bound.

    Built with `max_waiting` and a short `timeout`. A caller refused a connection (past the
    waiting queue, or its wait timed out) while every connection is lent out gets Overloaded:
    retry shortly. One refused while connections are to spare finds PostgreSQL not answering
    (the pool cannot open or check them): Unavailable. A psycopg error raised inside a
    `connection()` block (a statement, the commit) leaves it as our error (`translated`).
    """

    lent = 0  # connections handed out and not given back (the constructor stays the library's)

    async def getconn(self, timeout: float | None = None) -> Conn:  # noqa: ASYNC109 (its signature)
        try:
            conn = await super().getconn(timeout)
        except (TooManyRequests, PoolTimeout) as exc:
            if self.lent >= self.max_size:
                raise Overloaded(
                    POOL_RETRY_AFTER_SECONDS, "every database connection is busy"
                ) from exc
            raise Unavailable(UNAVAILABLE) from exc
        self.lent += 1
        return conn

    async def putconn(self, conn: Conn) -> None:
        self.lent -= 1
        await super().putconn(conn)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Conn]:  # noqa: ASYNC109
        try:
            async with super().connection(timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            raise translated(exc) from exc

    async def wait_ready(self, within_seconds: float) -> None:
        """Waits until the pool is full; Unavailable if PostgreSQL does not answer in time."""
        try:
            await self.wait(timeout=within_seconds)
        except (PoolTimeout, psycopg.Error) as exc:
            raise Unavailable(UNAVAILABLE) from exc


def new_pool(dsn: str, size: int, max_waiting: int, timeout_seconds: float, name: str) -> Pool:
    """A closed pool of `size` connections (opened whole: a burst never waits for it to grow),
    each checked before it is lent, failing fast past `max_waiting` callers."""
    return Pool(
        dsn,
        min_size=size,
        max_size=size,
        max_waiting=max_waiting,
        open=False,
        timeout=timeout_seconds,
        check=AsyncConnectionPool.check_connection,
        name=name,
    )


async def migrate(pool: Pool) -> list[str]:
    """Applies the SQL files in migrations/ not applied yet, in name order; returns their names."""
    files = sorted(
        (
            f
            for f in resources.files("accounts_service.adapters.db.migrations").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for f in files:
            if f.name in done:
                continue
            await conn.execute(f.read_text(encoding="utf-8"))
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (f.name,))
            applied.append(f.name)
    return applied
