"""The grammars the API builds, run by llguidance over a byte-level vocabulary (one token per byte)."""

from __future__ import annotations

import llguidance
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from api.chat.grammars import answer_grammar, tools_grammar
from contracts.tool_markup import call_text

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": CITY}},
    {"type": "function", "function": {"name": "now"}},
]
WEATHER = call_text("weather", '{"city":"Paris"}')
NOW = call_text("now", "{}")


@pytest.fixture(scope="module")
def byte_tokenizer() -> llguidance.LLTokenizer:
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|end|>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|end|>"])
    return llguidance.LLTokenizer(tokenizer.to_str(), eos_token=[vocab["<|end|>"]])


def accepts(tokenizer, grammar: str, text: str) -> bool:
    """Whether `text` is a whole output the grammar allows (it may end there)."""
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    return all(matcher.consume_token(t) for t in tokenizer.tokenize_str(text)) and matcher.is_accepting()


@pytest.mark.parametrize(
    ("mode", "parallel", "text", "allowed"),
    [
        ("auto", True, "plain text", True),
        ("auto", True, "Checking. " + WEATHER, True),
        ("auto", True, WEATHER + "\n" + NOW, True),
        ("auto", False, WEATHER + "\n" + NOW, False),
        ("auto", True, WEATHER + " and more text", False),
        ("auto", True, '<tool_call>\n{"name":"weather","arguments":{}}\n</tool_call>', False),  # city required
        ("required", True, "text " + WEATHER, False),
        ("required", True, WEATHER + "\n" + NOW, True),
        ("required", False, NOW, True),
        ("named", True, NOW, True),
        ("named", True, WEATHER, False),
        ("named", True, NOW + "\n" + NOW, False),
    ],
)
def test_tool_grammars(byte_tokenizer, mode: str, parallel: bool, text: str, allowed: bool):
    grammar = tools_grammar(TOOLS, mode, parallel, named="now")
    assert accepts(byte_tokenizer, grammar, text) is allowed


def test_auto_with_a_response_format_answers_in_json_or_calls(byte_tokenizer):
    grammar = tools_grammar(TOOLS, "auto", True, answer=(CITY, True))
    assert accepts(byte_tokenizer, grammar, '{"city": "Oslo"}')
    assert accepts(byte_tokenizer, grammar, NOW)
    assert not accepts(byte_tokenizer, grammar, "plain text")


def test_answer_whitespace_is_bounded(byte_tokenizer):
    grammar = answer_grammar(CITY, strict=True)
    assert accepts(byte_tokenizer, grammar, '{ "city" : "Oslo" }')
    assert not accepts(byte_tokenizer, grammar, '{      "city": "Oslo"}')


def test_strict_names_what_it_cannot_enforce_and_lenient_ignores_it():
    with pytest.raises(ValueError, match="if"):
        answer_grammar({"type": "object", "if": {}}, strict=True)
    answer_grammar({"type": "object", "if": {}}, strict=False)
    with pytest.raises(ValueError, match="if"):
        tools_grammar(
            [{"type": "function", "function": {"name": "f", "parameters": {"if": {}}, "strict": True}}], "auto", True
        )
