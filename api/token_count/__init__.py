"""Foundry Local's token count endpoint."""
