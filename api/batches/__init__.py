"""OpenAI's Batch API: batches of chat, completion or embedding requests run as jobs."""
