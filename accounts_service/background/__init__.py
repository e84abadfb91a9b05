"""Loops that main.py starts once PostgreSQL and S3 answer: the outbox relay, the reconciler,
the storage cleaner and the pruner. Each survives outages (it catches our errors only) and
ends when its `stop` event is set."""
