-- Which user an outbox event is for, and when thumbnails were last requested: the reconciler
-- re-requests users PENDING for too long with no event still waiting in the outbox.
ALTER TABLE outbox ADD COLUMN user_id uuid;
CREATE INDEX outbox_user_unpublished ON outbox (user_id) WHERE published_at IS NULL;

ALTER TABLE users ADD COLUMN requested_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX users_pending_since ON users (requested_at) WHERE thumbnail_status = 'PENDING';
