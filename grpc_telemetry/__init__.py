"""gRPC server metrics and tracing shared by both services (a cross-cutting interceptor)."""
