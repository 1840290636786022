"""Foundry Local's management routes: catalog, load/unload, GPU choice."""
