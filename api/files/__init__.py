"""OpenAI's Files API over Ladle's file store: uploads for batches, batch output and error files."""
