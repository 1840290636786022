"""The harmony chat format of gpt-oss, for tiny gpt-oss test models: its special tokens added to
SmolLM2's tokenizer and a chat template in its shape.

The template is written here after the format's public description (a system message with the
current date and reasoning effort, the caller's system text as the developer's instructions, turns
as `<|start|>role<|message|>text<|end|>`, the answer on the `final` channel). Like gpt-oss's own, it
calls `strftime_now`, `raise_exception`, `namespace` and `tojson`, which every renderer Ladle uses
must provide.
"""

from __future__ import annotations

SMOLLM2_VOCAB_SIZE = 49152
# In id order after SmolLM2's vocabulary: <|start|> is 49152, <|call|> 49158.
HARMONY_TOKENS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")
HARMONY_VOCAB_SIZE = SMOLLM2_VOCAB_SIZE + len(HARMONY_TOKENS)
_ID = {token: SMOLLM2_VOCAB_SIZE + i for i, token in enumerate(HARMONY_TOKENS)}
# gpt-oss's stop tokens in its order: <|return|>, <|endoftext|> (SmolLM2's id 0), <|call|>.
HARMONY_STOP = (_ID["<|return|>"], 0, _ID["<|call|>"])

HARMONY_TEMPLATE = """\
{#- gpt-oss's harmony format: system, developer instructions, turns, the assistant's answer. -#}
{%- if reasoning_effort is not defined -%}{%- set reasoning_effort = "medium" -%}{%- endif -%}
<|start|>system<|message|>You are a tiny random model.
Knowledge cutoff: 2024-06
Current date: {{ strftime_now("%Y-%m-%d") }}

Reasoning: {{ reasoning_effort }}

# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>
{%- set ns = namespace(instructions="") -%}
{%- for message in messages -%}
{%- if message.role == "system" or message.role == "developer" -%}
{%- set ns.instructions = ns.instructions + message.content -%}
{%- endif -%}
{%- endfor -%}
{%- if ns.instructions -%}
<|start|>developer<|message|># Instructions

{{ ns.instructions }}<|end|>
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == "user" -%}
<|start|>user<|message|>{{ message.content }}<|end|>
{%- elif message.role == "assistant" -%}
<|start|>assistant<|channel|>final<|message|>{{ message.content }}<|end|>
{%- elif message.role == "tool" -%}
<|start|>functions.tool to=assistant<|channel|>commentary<|message|>{{ message.content | tojson }}<|end|>
{%- elif message.role != "system" and message.role != "developer" -%}
{{- raise_exception("harmony has no role " + message.role) -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}
"""


def harmony_tokenizer(tokenizer) -> None:
    """Give a SmolLM2 `transformers` tokenizer harmony's special tokens and chat template."""
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in HARMONY_TOKENS], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(HARMONY_TOKENS))
    if ids != [_ID[t] for t in HARMONY_TOKENS]:
        raise RuntimeError(f"harmony's tokens got ids {ids}, not those after SmolLM2's vocabulary")
    # As gpt-oss's tokenizer: a turn ends with <|return|>, padding is <|endoftext|>.
    tokenizer.eos_token, tokenizer.pad_token = "<|return|>", "<|endoftext|>"
    tokenizer.chat_template = HARMONY_TEMPLATE
