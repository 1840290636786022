"""OpenAI's Responses API (POST /v1/responses and its routes), run as chat jobs."""
