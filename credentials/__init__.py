"""How the services hold their credentials and keep them out of logs: URL redaction, the log
scrubber, NATS credentials and connect options, gRPC TLS from certificate files, S3 credentials
(static, or AWS' chain through minio's providers)."""
