-- Users, the transactional outbox and issued uploads.
CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    email               text NOT NULL,
    display_name        text NOT NULL,
    avatar_object       text NOT NULL,
    avatar_content_type text NOT NULL,
    avatar_generation   bigint NOT NULL DEFAULT 1,
    thumbnail_status    text NOT NULL CHECK (thumbnail_status IN ('PENDING', 'READY', 'FAILED')),
    thumbnails          jsonb,
    failure_code        text NOT NULL DEFAULT '',
    failure_reason      text NOT NULL DEFAULT '',
    request_id          text,
    request_hash        text,
    create_time         timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE UNIQUE INDEX users_request_id_key ON users (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX users_create_time_id ON users (create_time, id);

CREATE TABLE outbox (
    event_id     uuid PRIMARY KEY,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text NOT NULL DEFAULT ''
);

CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

-- Wakes the relay as soon as an event commits (NOTIFY is delivered at commit).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE uploads (
    object         text PRIMARY KEY,
    content_type   text NOT NULL,
    content_length bigint NOT NULL,
    expire_time    timestamptz NOT NULL,
    used_by        uuid,
    create_time    timestamptz NOT NULL DEFAULT clock_timestamp()
);
