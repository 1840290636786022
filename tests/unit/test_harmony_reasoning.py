"""Reading gpt-oss's reasoning out of its harmony output by token id (the `analysis` channel), alone and
in a row; the ids are those cli/harmony.py gives harmony's tokens in the tiny gpt-oss models."""

from __future__ import annotations

import pytest

from cli.harmony import HARMONY_STOP, HARMONY_TEMPLATE, HARMONY_TOKENS, SMOLLM2_VOCAB_SIZE
from contracts.events import TokenLogprob
from contracts.jobs import SamplingParams
from contracts.tool_markup import call_text
from worker.engines.generation_request import GenerationRequest, Row, complete
from worker.engines.harmony_reasoning import HarmonyReader, HarmonyTokens, harmony_tokens

SPECIAL = {token: SMOLLM2_VOCAB_SIZE + i for i, token in enumerate(HARMONY_TOKENS)}
TOKENS = HarmonyTokens(
    start=SPECIAL["<|start|>"],
    end=SPECIAL["<|end|>"],
    message=SPECIAL["<|message|>"],
    channel=SPECIAL["<|channel|>"],
    constrain=SPECIAL["<|constrain|>"],
)
# What gpt-oss writes after `<|start|>assistant`, one token a piece (harmony's tokens decode to "").
OUTPUT = ["<|channel|>", "analysis", "<|message|>", "The", " user", " asks", ".", "<|end|>"]
OUTPUT += ["<|start|>", "ass", "istant", "<|channel|>", "final", "<|message|>", "It", "'s", " Paris", "!"]


class _Harmony:
    """A decode stream over a list of pieces: token i is piece i, harmony's tokens have their ids."""

    def __init__(self, pieces: list[str]) -> None:
        self.ids = [SPECIAL.get(piece, 100 + i) for i, piece in enumerate(pieces)]
        self.text = {token: ("" if piece in SPECIAL else piece) for token, piece in zip(self.ids, pieces, strict=True)}

    def decode(self, token: int) -> str:
        return self.text[token]


def read(pieces: list[str]) -> tuple[str, str, HarmonyReader]:
    stream, reader = _Harmony(pieces), HarmonyReader(TOKENS)
    fed = [reader.feed_token(token, stream.decode(token)) for token in stream.ids]
    tail = reader.finish()
    reasoning = "".join(r for r, _ in [*fed, tail])
    return reasoning, "".join(a for _, a in [*fed, tail]), reader


def test_the_analysis_channel_is_reasoning_and_the_final_channel_the_answer():
    reasoning, answer, reader = read(OUTPUT)
    assert (reasoning, answer) == ("The user asks.", "It's Paris!")
    assert reader.thought
    assert reader.reasoning_tokens == 8  # <|channel|>analysis<|message|>, 4 tokens of text, <|end|>


def test_an_answer_without_analysis_is_all_answer_and_counts_no_reasoning():
    reasoning, answer, reader = read(["<|channel|>", "final", "<|message|>", "Paris", "."])
    assert (reasoning, answer) == ("", "Paris.")
    assert not reader.thought and reader.reasoning_tokens == 0


def test_output_without_harmony_headers_is_all_answer():
    reasoning, answer, reader = read(["Paris", " is", "<|end|>", " it"])
    assert (reasoning, answer) == ("", "Paris is it")
    assert not reader.thought


def test_a_recipient_before_the_channel_is_header_not_text():
    pieces = [" to", "=functions", ".now", "<|channel|>", "commentary", " json", "<|message|>", "{}", "<|call|>"]
    reasoning, answer, _ = read(pieces)
    assert (reasoning, answer) == ("", "{}")


def test_text_that_only_began_like_a_recipient_is_the_answer_at_the_end():
    assert read([" to", "day"])[:2] == ("", " today")
    assert read([" to"])[:2] == ("", " to")


def test_commentary_is_answer_text_and_a_constrained_format_is_header():
    pieces = ["<|channel|>", "analysis", "<|message|>", "Call it.", "<|end|>", "<|start|>", "ass", "istant"]
    pieces += [" to", "=functions.now", "<|channel|>", "commentary", " ", "<|constrain|>", "json", "<|message|>", "{}"]
    reasoning, answer, reader = read(pieces)
    assert (reasoning, answer) == ("Call it.", "{}")
    assert reader.reasoning_tokens == 5


def test_messages_of_the_same_kind_are_joined_by_a_blank_line():
    pieces = ["<|channel|>", "analysis", "<|message|>", "One.", "<|end|>"]
    pieces += ["<|start|>", "assistant", "<|channel|>", "analysis", "<|message|>", "Two.", "<|end|>"]
    pieces += ["<|start|>", "assistant", "<|channel|>", "commentary", "<|message|>", "Wait.", "<|end|>"]
    pieces += ["<|start|>", "assistant", "<|channel|>", "final", "<|message|>", "Done."]
    reasoning, answer, reader = read(pieces)
    assert (reasoning, answer) == ("One.\n\nTwo.", "Wait.\n\nDone.")
    assert reader.reasoning_tokens == 5 + 7  # the second analysis message with its header


def test_output_cut_inside_the_analysis_counts_its_tokens_so_far():
    reasoning, answer, reader = read(OUTPUT[:5])
    assert (reasoning, answer) == ("The user", "")
    assert reader.thought and reader.reasoning_tokens == 5


def test_a_model_speaks_harmony_when_its_template_writes_channels_as_single_tokens():
    encode = {f"<|{name}|>": [SPECIAL[f"<|{name}|>"]] for name in ("start", "end", "message", "channel", "constrain")}
    assert harmony_tokens(HARMONY_TEMPLATE, encode.__getitem__) == TOKENS
    assert harmony_tokens("<|im_start|>{{ message.role }}", encode.__getitem__) is None
    assert harmony_tokens(HARMONY_TEMPLATE, lambda text: [1, 2]) is None  # a vocabulary without them


def run_row(pieces: list[str], **fields) -> tuple[GenerationRequest, list]:
    events, stream = [], _Harmony(pieces)
    request = GenerationRequest(
        job_id="j",
        prompts=[[1]],
        n=1,
        max_tokens=fields.pop("max_tokens", 100),
        stop=fields.pop("stop", []),
        sampling=SamplingParams(),
        emit=events.append,
        thinking=TOKENS,
        **fields,
    )
    row = Row(request, 0, stream, frozenset(HARMONY_STOP))
    for token in [*stream.ids, SPECIAL["<|return|>"]]:
        piece = stream.text.get(token, "")
        entry = TokenLogprob(token=piece, logprob=-1.0, bytes=list(piece.encode()), top_logprobs=[])
        row.accept(token, entry if request.logprobs is not None else None)
    complete(request, [row], batch_size=1)
    return request, events


def test_a_row_of_a_harmony_model_sends_reasoning_apart_and_end_does_not_stop_it():
    request, events = run_row(OUTPUT, stop=["asks"], logprobs=0)
    choice, usage = request.result.choices[0], request.result.usage
    # The stop string is in the reasoning only: the answer is not cut, <|end|> ended the analysis only.
    assert (choice.reasoning, choice.text, choice.finish_reason) == ("The user asks.", "It's Paris!", "stop")
    assert "".join(e.reasoning or "" for e in events) == choice.reasoning
    assert "".join(e.text for e in events) == choice.text
    assert usage.completion_tokens == len(OUTPUT) + 1  # <|return|> too
    assert usage.completion_tokens_details.reasoning_tokens == 8
    assert [e.token for e in choice.logprobs] == ["It", "'s", " Paris", "!"]  # the answer's tokens only


def test_a_row_cut_by_max_tokens_inside_the_analysis_has_reasoning_and_no_answer():
    request, _ = run_row(OUTPUT, max_tokens=6)
    choice = request.result.choices[0]
    assert (choice.reasoning, choice.text, choice.finish_reason) == ("The user asks", "", "length")
    assert request.result.usage.completion_tokens_details.reasoning_tokens == 6


@pytest.mark.parametrize("stop", [[], ["Paris"]])
def test_stop_strings_apply_to_the_final_answer(stop: list[str]):
    request, _ = run_row(OUTPUT, stop=stop)
    assert request.result.choices[0].text == ("It's " if stop else "It's Paris!")


def test_calls_in_the_final_channel_are_read_as_calls():
    call = call_text("now", "{}")
    pieces = ["<|channel|>", "analysis", "<|message|>", "I need the time.", "<|end|>", "<|start|>", "assistant"]
    pieces += ["<|channel|>", "final", "<|message|>", call[:9], call[9:]]
    request, _ = run_row(pieces, grammar="g", tool_calls="auto")
    choice = request.result.choices[0]
    assert choice.reasoning == "I need the time." and choice.text == ""
    assert [c.name for c in choice.tool_calls] == ["now"] and choice.finish_reason == "tool_calls"
