"""The models in the model directory (OpenAI and Foundry lists)."""
