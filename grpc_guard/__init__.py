"""gRPC server guards shared by both services: in-flight limits, undecodable requests, RetryInfo."""
