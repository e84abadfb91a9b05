"""Accounts service: users in PostgreSQL, a transactional outbox to NATS JetStream."""
