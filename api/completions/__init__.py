"""POST /v1/completions (OpenAI and Databricks fields), prompts batched in one job."""
