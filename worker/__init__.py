"""Ladle's workers: the Celery app, engines and the model store."""
