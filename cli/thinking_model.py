"""Tiny hand-wired models that think: a Qwen3 whose weights make it write, greedily and always,
`<think>The user asks for the capital of France.</think>` then `\\n\\nIt's Paris!` and stop.

The next token depends only on the current one (a chain of bigrams): the attention and MLP output
projections are zero, so the residual stream is the current token's embedding; each token of the
chain has an embedding along a direction of its own, and the LM head maps that direction to the
token after it with a margin int4 RTN quantization keeps. Other tokens keep random embeddings and
lead nowhere in particular (their logits are all zero).

Two chat templates over the same weights (the chain starts at the generation prompt's last token):
Qwen3's shape, where the model writes `<think>` itself (the prompt ends with `assistant\\n`), and
DeepSeek-R1's, where the generation prompt ends with `<think>` and the output starts inside the
thinking. `<think>` and `</think>` are added to SmolLM2's tokenizer as ordinary (not special)
tokens, as Qwen3's and DeepSeek-R1's tokenizers have them, so they decode as text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

THINK_TOKENS = ("<think>", "</think>")
THINKING_VOCAB_SIZE = 49152 + len(THINK_TOKENS)
EOS_ID = 2  # SmolLM2's <|im_end|>
# The chain, one token per piece: the generation prompt's last token, the thinking, the answer.
REASONING = "The user asks for the capital of France."
ANSWER = "It's Paris!"
CHAIN = ("\n", "<think>", "The", " user", " asks", " for", " the", " capital", " of", " France", ".", "</think>")
CHAIN += ("\n\n", "It", "'s", " Paris", "!")
# The embedding's norm along a chain token's direction, and the LM head's weight from it to the next
# token: after RMSNorm the direction holds sqrt(hidden_size) = 8, so the next token's logit is 80
# and every other token's 0.
EMBEDDING_NORM = 50.0
HEAD_WEIGHT = 10.0

# Qwen3's template, shortened: an assistant turn of the conversation keeps only what follows its
# thinking (as Qwen3's drops earlier turns' reasoning); the model writes `<think>` itself.
QWEN3_TEMPLATE = """\
{%- for message in messages -%}
<|im_start|>{{ message.role }}
{% if message.role == "assistant" -%}
{{ message.content.split("</think>")[-1].lstrip() }}
{%- else -%}
{{ message.content }}
{%- endif -%}
<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}<|im_start|>assistant
{% endif -%}
"""
# DeepSeek-R1's shape: the generation prompt opens the thinking.
R1_TEMPLATE = QWEN3_TEMPLATE.replace(
    "<|im_start|>assistant\n{% endif -%}", "<|im_start|>assistant\n<think>{% endif -%}"
)

THINKING_MODELS = {"tiny-thinking-qwen3": QWEN3_TEMPLATE, "tiny-thinking-r1": R1_TEMPLATE}
# The builder's options: those of published folders (int4 RTN, block 32, accuracy level 4).
BUILD_OPTIONS = ["algo_config=rtn", "block_size=32", "accuracy_level=4"]


def thinking_tokenizer(tokenizer, template: str) -> list[int]:
    """Give a SmolLM2 `transformers` tokenizer `<think>`, `</think>` and `template`; returns the
    chain's token ids (each piece must be one token, and each token once, or the chain loops)."""
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer.chat_template = template
    ids = []
    for piece in CHAIN:
        encoded = tokenizer(piece, add_special_tokens=False).input_ids
        if len(encoded) != 1:
            raise RuntimeError(f"the chain's piece {piece!r} is {len(encoded)} tokens, not one")
        ids.append(encoded[0])
    if len(set(ids)) != len(ids) or EOS_ID in ids:
        raise RuntimeError(f"the chain's tokens repeat: {ids}")
    return [*ids, EOS_ID]


def thinking_model(chain: list[int]):
    """The fp32 Qwen3 whose greedy output follows `chain` (each token to the next)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    config = Qwen3Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=THINKING_VOCAB_SIZE,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        tie_word_embeddings=False,
    )
    if len(chain) - 1 > config.hidden_size:
        raise RuntimeError("the chain has more tokens than the hidden state has directions")
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for direction, (token, following) in enumerate(zip(chain, chain[1:], strict=False)):
            embeddings[token].zero_()
            embeddings[token, direction] = EMBEDDING_NORM
            head[following, direction] = HEAD_WEIGHT
    return model


def thinking_exporter(name: str, base_tokenizer: Callable[[], object]) -> Callable[[Path], None]:
    """The exporter of the thinking model `name` (its chat template): weights and tokenizer, the
    latter SmolLM2's `transformers` tokenizer `base_tokenizer()` gives, with the think tags added."""

    def export(hf_dir: Path) -> None:
        tokenizer = base_tokenizer()
        chain = thinking_tokenizer(tokenizer, THINKING_MODELS[name])
        thinking_model(chain).save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)

    return export
