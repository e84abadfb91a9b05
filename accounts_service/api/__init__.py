"""gRPC in, our calls, status codes out: the server and its limits, the servicer, the error to
status mapping and the internal-credential guard. Nothing here talks to a database or S3."""
