"""A fresh, migrated database per test, on the session's PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from accounts_service.adapters import db
from devstack.postgres import Postgres


@pytest.fixture
async def dsn(pg: Postgres) -> AsyncIterator[str]:
    name = f"it_{uuid.uuid4().hex[:8]}"
    yield pg.create_database(name)
    pg.drop_database(name)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[db.Pool]:
    async with db.Pool(dsn, min_size=1, max_size=8, open=False) as pool:
        await pool.wait(timeout=10)
        assert await db.migrate(pool) != []
        yield pool
