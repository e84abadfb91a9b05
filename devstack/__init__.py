"""Real local NATS JetStream, SeaweedFS S3 and PostgreSQL for `make run` and the tests."""
