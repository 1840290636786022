"""POST /v1/chat/completions (OpenAI and Foundry Local)."""
