-- No connection is held across the network: the relay leases events (claimed_until) and
-- publishes with no transaction open; UpdateAvatar reserves its generation number
-- (avatar_reserved) before storing the original, then commits in a short transaction.
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
ALTER TABLE users ADD COLUMN avatar_reserved bigint NOT NULL DEFAULT 0;

-- What grows with traffic is pruned in small batches, oldest first.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX uploads_expire_time ON uploads (expire_time);
CREATE INDEX users_request_id_time ON users (create_time) WHERE request_id IS NOT NULL;
