"""PostgreSQL, the accounts service's only SQL: callers use `db.<name>` from this package.

One module per table or concern (users, outbox, uploads, cleanup, pruning), the pool (where
psycopg's errors become ours: no caller sees one) and LISTEN. Every statement function runs on
a connection from `Pool.connection()`, inside the caller's block.
"""

from accounts_service.adapters.db.cleanup import (
    claim_cleanup,
    finish_cleanup,
    guard_prefixes,
    postpone_cleanup,
    release_guard,
    schedule_cleanup,
)
from accounts_service.adapters.db.listen import listening
from accounts_service.adapters.db.outbox import (
    claim_events,
    insert_event,
    mark_published,
    pending_events,
    record_publish_error,
    release_events,
)
from accounts_service.adapters.db.pool import Conn, Pool, conninfo_secrets, migrate, new_pool
from accounts_service.adapters.db.pruning import prune_outbox, prune_request_ids, prune_uploads
from accounts_service.adapters.db.rows import (
    USER_COLUMNS,
    CleanupRow,
    OutboxRow,
    UploadRow,
    UserRow,
)
from accounts_service.adapters.db.uploads import claim_upload, get_upload, insert_upload
from accounts_service.adapters.db.users import (
    claim_stalled,
    delete_user,
    email_taken,
    get_user,
    get_user_by_request_id,
    insert_user,
    list_users,
    reserve_generation,
    set_avatar,
    set_failure,
    set_pending,
    set_thumbnails,
)

__all__ = [
    "USER_COLUMNS",
    "CleanupRow",
    "Conn",
    "OutboxRow",
    "Pool",
    "UploadRow",
    "UserRow",
    "claim_cleanup",
    "claim_events",
    "claim_stalled",
    "claim_upload",
    "conninfo_secrets",
    "delete_user",
    "email_taken",
    "finish_cleanup",
    "get_upload",
    "get_user",
    "get_user_by_request_id",
    "guard_prefixes",
    "insert_event",
    "insert_upload",
    "insert_user",
    "list_users",
    "listening",
    "mark_published",
    "migrate",
    "new_pool",
    "pending_events",
    "postpone_cleanup",
    "prune_outbox",
    "prune_request_ids",
    "prune_uploads",
    "record_publish_error",
    "release_events",
    "release_guard",
    "reserve_generation",
    "schedule_cleanup",
    "set_avatar",
    "set_failure",
    "set_pending",
    "set_thumbnails",
]
