-- WatchUser: every change to a user NOTIFYs its id on channel user_changes (delivered at commit).
CREATE FUNCTION user_changes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('user_changes', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER user_changes_notify AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION user_changes_notify();

-- Storage prefixes to empty once due: a deleted user's objects (at once), an old avatar
-- generation's (after a grace period). A row stays until its objects are gone, so an S3 outage
-- only delays the cleanup.
CREATE TABLE storage_cleanup (
    id         bigserial PRIMARY KEY,
    prefix     text NOT NULL,
    due_at     timestamptz NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT ''
);

CREATE INDEX storage_cleanup_due ON storage_cleanup (due_at);
