"""The Azure AI Model Inference API (what the `azure-ai-inference` SDK calls), at the root and under /models."""
