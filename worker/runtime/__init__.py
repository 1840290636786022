"""Worker runtime: the Celery app, heartbeats, event publishing, job running and draining."""
