"""The SearchService pod: Solve over gRPC, carried to the workers as Celery tasks."""
