"""One module per outside system (PostgreSQL, S3, NATS, presigning, the change hub), each
translating its library's errors into accounts_service.errors: nothing above sees psycopg,
psycopg_pool, minio or nats."""
