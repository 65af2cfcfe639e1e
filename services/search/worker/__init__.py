"""The Celery worker pod: its tasks and its search runtime over gRPC backends."""
