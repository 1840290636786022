"""Probes: /health and /ready."""
