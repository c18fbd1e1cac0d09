"""The Switchyard router: a gRPC service that answers from the Redis cache or the student model."""
