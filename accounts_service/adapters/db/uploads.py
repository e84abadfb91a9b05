"""SQL on the `uploads` table: uploads issued by CreateAvatarUpload and who used them."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg.rows import class_row

from accounts_service.adapters.db.pool import Conn
from accounts_service.adapters.db.rows import UploadRow


async def insert_upload(
    conn: Conn, obj: str, content_type: str, content_length: int, expire_time: datetime
) -> None:
    await conn.execute(
        "INSERT INTO uploads (object, content_type, content_length, expire_time)"
        " VALUES (%s, %s, %s, %s)",
        (obj, content_type, content_length, expire_time),
    )


async def claim_upload(conn: Conn, obj: str, user_id: uuid.UUID) -> UploadRow | None:
    """Marks an issued, unused upload as used by `user_id`; None if not issued or already used."""
    async with conn.cursor(row_factory=class_row(UploadRow)) as cur:
        await cur.execute(
            "UPDATE uploads SET used_by = %s WHERE object = %s AND used_by IS NULL"
            " RETURNING object, content_type, content_length, expire_time, used_by",
            (user_id, obj),
        )
        return await cur.fetchone()


async def get_upload(conn: Conn, obj: str) -> UploadRow | None:
    async with conn.cursor(row_factory=class_row(UploadRow)) as cur:
        await cur.execute(
            "SELECT object, content_type, content_length, expire_time, used_by"
            " FROM uploads WHERE object = %s",
            (obj,),
        )
        return await cur.fetchone()
