"""GET /v1/jobs: jobs listed, filtered and paged (a batch's lines among them)."""
