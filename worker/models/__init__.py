"""Model-side helpers: the loaded-model registry, tokenizers, prompts and token counting."""
