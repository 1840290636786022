"""The `ladle` command: serve, worker, models."""
