"""A tiny hand-wired gpt-oss that thinks in harmony: its weights make it write, greedily and always,
`<|channel|>analysis<|message|>The user asks for the capital of France.<|end|>` then
`<|start|>assistant<|channel|>final<|message|>It's Paris!<|return|>`.

As cli/thinking_model.py's Qwen3, the next token mostly depends on the current one: the experts'
output is zero and each token of the chain has an embedding along a direction of its own, which the
LM head maps to the token after it. But `<|channel|>` and `<|message|>` come twice, followed by
different tokens, so two attention heads add a flag direction (FLAG) to the residual stream where
the second of them stands:

- the full-attention layer's head: a `<|channel|>` looks for an `analysis` token before it (keys
  along the lowest rotary frequency, which barely turns over the context); found, it is the final
  channel's header;
- the sliding layer's head: a `<|message|>` looks at the latest `analysis` or `final` before it
  (keys along a rotary frequency under which nearer keys score higher over the 48-token window),
  and only `final` carries the flag.

The LM head sends `<|channel|>` to `analysis`, or to `final` when flagged; `<|message|>` to the
reasoning's first token, or to the answer's when flagged. Attention sinks keep the heads silent
elsewhere (a query that matches nothing attends to the sink). Every weight matrix has at most one
nonzero magnitude per quantization block, so int4 RTN keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cli.harmony import harmony_tokenizer
from cli.thinking_model import ANSWER, EMBEDDING_NORM, HEAD_WEIGHT, REASONING

HARMONY_THINKING_MODEL = "tiny-thinking-gpt-oss"
# What the model writes after the generation prompt (`<|start|>assistant`); the chain starts at the
# prompt's last token.
ANALYSIS = f"<|channel|>analysis<|message|>{REASONING}<|end|>"
FINAL = f"<|start|>assistant<|channel|>final<|message|>{ANSWER}<|return|>"
OUTPUT = ANALYSIS + FINAL
# The flag's direction: the hidden state's last (the chain's tokens take the first ones).
FLAG = 63
# Flagged, a token's next one gets FLAGGED_WEIGHT from the flag and TWIN_WEIGHT from the token;
# the unflagged next one loses HEAD_WEIGHT from the flag. After RMSNorm a flagged position holds
# 8/sqrt(2) along both directions: the flagged next token's logit is 85, the other's 0, any token
# whose successor is flagged 57; unflagged, the next token's is 80, the flagged twin's 40.
FLAGGED_WEIGHT = 10.0
TWIN_WEIGHT = 5.0
# The heads: query and key weights (scores of about 60 and 40 against a sink of 10), the value
# they carry (8 along the value's first dimension) written to FLAG with the chain's embedding norm.
MESSAGE_QK, CHANNEL_QK = 1.8, 1.5
SINK = 10.0
FLAG_OUT = EMBEDDING_NORM / 8
# Rotary dimensions: the sliding head's (frequency 0.04: monotonic over 48 positions), the full
# head's (the lowest frequency, 1.5e-5 per position).
MESSAGE_DIM, CHANNEL_DIM = 2, 7
# The builder's options: published folders' quantization, the experts unquantized (as for
# tiny-random-gpt-oss: the builder would read MXFP4 tensors random weights do not have).
BUILD_OPTIONS = [
    "algo_config=rtn",
    "block_size=32",
    "accuracy_level=4",
    '--target_options={"quant_config": {"moe": {"type": "none"}}}',
]


def harmony_chain(tokenizer) -> tuple[int, list[int]]:
    """The generation prompt's last token and the ids of OUTPUT, from a harmony tokenizer."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}], tokenize=False, add_generation_prompt=True
    )
    start = tokenizer(prompt, add_special_tokens=False).input_ids[-1]
    return start, tokenizer(OUTPUT, add_special_tokens=False).input_ids


def _successors(tokenizer, start: int, output: list[int]) -> dict[int, list[int]]:
    """Each chain token's next tokens, unflagged then (for `<|channel|>` and `<|message|>`) flagged."""
    twins = set(tokenizer.convert_tokens_to_ids(["<|channel|>", "<|message|>"]))
    successors: dict[int, list[int]] = {}
    for token, following in zip([start, *output], output, strict=False):
        seen = successors.setdefault(token, [])
        if following not in seen:
            seen.append(following)
    for token, following in successors.items():
        if len(following) > (2 if token in twins else 1):
            raise RuntimeError(f"token {token} is followed by {following}: the chain cannot hold it")
    return successors


def harmony_thinking_model(config, tokenizer):
    """The fp32 gpt-oss (`config`: tiny-random-gpt-oss's) whose greedy output is OUTPUT."""
    import torch
    from transformers import AutoModelForCausalLM

    start, output = harmony_chain(tokenizer)
    successors = _successors(tokenizer, start, output)
    if len(successors) >= FLAG:
        raise RuntimeError("the chain has more tokens than the hidden state has directions")
    direction = {token: i for i, token in enumerate(successors)}
    channel, message, analysis, final = tokenizer.convert_tokens_to_ids(
        ["<|channel|>", "<|message|>", "analysis", "final"]
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            attention, experts = layer.self_attn, layer.mlp.experts
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj):
                projection.weight.zero_()
                projection.bias.zero_()
            attention.sinks.fill_(SINK)
            experts.down_proj.zero_()
            experts.down_proj_bias.zero_()
        # Head 0 of each layer (its key/value head 0): query, keys, value, then the flag.
        sliding, full = (model.model.layers[i].self_attn for i in (0, 1))
        sliding.q_proj.weight[MESSAGE_DIM, direction[message]] = MESSAGE_QK
        sliding.k_proj.weight[MESSAGE_DIM, direction[analysis]] = MESSAGE_QK
        sliding.k_proj.weight[MESSAGE_DIM, direction[final]] = MESSAGE_QK
        sliding.v_proj.weight[0, direction[final]] = 1.0
        full.q_proj.weight[CHANNEL_DIM, direction[channel]] = CHANNEL_QK
        full.k_proj.weight[CHANNEL_DIM, direction[analysis]] = CHANNEL_QK
        full.v_proj.weight[0, direction[analysis]] = 1.0
        for attention in (sliding, full):
            attention.o_proj.weight[FLAG, 0] = FLAG_OUT
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for token, following in successors.items():
            embeddings[token].zero_()
            embeddings[token, direction[token]] = EMBEDDING_NORM
            head[following[0], direction[token]] = HEAD_WEIGHT
            if len(following) == 2:
                head[following[0], FLAG] = -HEAD_WEIGHT
                head[following[1], direction[token]] = TWIN_WEIGHT
                head[following[1], FLAG] = FLAGGED_WEIGHT
    return model


def harmony_thinking_exporter(config: Callable[[], object], base_tokenizer: Callable[[], object]):
    """The exporter of tiny-thinking-gpt-oss: `config()` gives tiny-random-gpt-oss's config,
    `base_tokenizer()` SmolLM2's `transformers` tokenizer, which gets harmony's tokens."""

    def export(hf_dir: Path) -> None:
        tokenizer = base_tokenizer()
        harmony_tokenizer(tokenizer)
        harmony_thinking_model(config(), tokenizer).save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)

    return export
