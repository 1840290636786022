"""Anthropic's Messages API (what the `anthropic` SDK and Claude Code call), over the chat handlers."""
