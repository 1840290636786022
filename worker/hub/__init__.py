"""Fetching model files from a model hub."""
