-- The W3C traceparent of the request that wrote an outbox row (NULL when tracing is off): the
-- relay puts it in the event's NATS headers, so one trace spans CreateUser, the render and
-- UpdateThumbnails.
ALTER TABLE outbox ADD COLUMN traceparent text;
