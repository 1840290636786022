"""API keys: who may call the API, which key made a request, and how often it may."""
