"""Reading a thinking model's reasoning out of its text (`<think>` … `</think>`), alone and in a row."""

from __future__ import annotations

import pytest

from contracts.events import TokenLogprob
from contracts.jobs import SamplingParams
from contracts.tool_markup import call_text
from worker.engines.generation_request import GenerationRequest, Row, complete
from worker.engines.reasoning import ReasoningParser, thinking_start, thinks

QWEN3_OUTPUT = "<think>\nThe user asks.\nSo: Paris.\n</think>\n\nIt's Paris!"


def parse(text: str, piece: int, start: str = "may_open") -> tuple[str, str, ReasoningParser]:
    """Feed `text` in pieces of `piece` characters; the reasoning and the answer."""
    parser, reasoning, answer = ReasoningParser(start), "", ""
    for begin in range(0, len(text), piece):
        more_reasoning, more_answer = parser.feed(text[begin : begin + piece])
        reasoning, answer = reasoning + more_reasoning, answer + more_answer
    tail_reasoning, tail_answer = parser.finish()
    return reasoning + tail_reasoning, answer + tail_answer, parser


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_thinking_the_output_opens_is_reasoning_in_any_pieces(piece: int):
    reasoning, answer, parser = parse("  " + QWEN3_OUTPUT, piece)
    assert (reasoning, answer) == ("The user asks.\nSo: Paris.", "It's Paris!")
    assert parser.thought


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_a_prompt_that_opened_the_thinking_makes_the_output_start_inside_it(piece: int):
    reasoning, answer, _ = parse("\nLet me see </thin.\n</think>Paris.", piece, start="opened")
    assert (reasoning, answer) == ("Let me see </thin.", "Paris.")


@pytest.mark.parametrize("piece", [1, 1000])
def test_output_that_does_not_open_the_thinking_is_all_answer(piece: int):
    reasoning, answer, parser = parse("  <thin> is not a tag </think>", piece)
    assert (reasoning, answer) == ("", "  <thin> is not a tag </think>")
    assert not parser.thought and parser.reasoning_tokens == 0


def test_output_cut_inside_the_thinking_is_all_reasoning():
    reasoning, answer, _ = parse("<think>Hmm, the answer is\n</thi", 1)
    assert (reasoning, answer) == ("Hmm, the answer is\n</thi", "")


def test_reasoning_tokens_count_the_thinking_with_its_tags():
    parser = ReasoningParser("may_open")
    fed = [parser.feed(piece) for piece in ["<think>", "Hi", ".", "</think>", "\n\n", "Yes", "."]]
    assert "".join(r for r, _ in fed) == "Hi." and "".join(a for _, a in fed) == "Yes."
    assert parser.reasoning_tokens == 4


def test_a_model_thinks_when_its_template_knows_the_closing_tag():
    assert thinks("{{ message.content.split('</think>')[-1] }}")
    assert not thinks("<|im_start|>{{ message.role }}")
    assert thinking_start("</think>", "<|im_start|>assistant\n<think>\n") == "opened"
    assert thinking_start("</think>", "<|im_start|>assistant\n") == "may_open"
    assert thinking_start("", "<|im_start|>assistant\n<think>\n") is None


class _Pieces:
    """A decode stream where token i is the i-th piece of text."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, token: int) -> str:
        return self.pieces[token]


def run_row(pieces: list[str], thinking: str | None, **fields) -> tuple[GenerationRequest, list]:
    events = []
    request = GenerationRequest(
        job_id="j",
        prompts=[[1]],
        n=1,
        max_tokens=100,
        stop=fields.pop("stop", []),
        sampling=SamplingParams(),
        emit=events.append,
        thinking=thinking,
        **fields,
    )
    row = Row(request, 0, _Pieces(pieces), frozenset({-1}))
    for token, piece in enumerate(pieces):
        entry = TokenLogprob(token=piece, logprob=-1.0, bytes=list(piece.encode()), top_logprobs=[])
        row.accept(token, entry if request.logprobs is not None else None)
    row.finish("stop")
    complete(request, [row], batch_size=1)
    return request, events


def test_a_row_sends_reasoning_apart_from_its_text_and_counts_its_tokens():
    pieces = ["<think>", "\n", "Think", " stop", ".", "</think>", "\n\n", "Yes", " stop", " no"]
    request, events = run_row(pieces, "may_open", stop=["stop"], logprobs=0)
    choice, usage = request.result.choices[0], request.result.usage
    assert choice.reasoning == "Think stop." and choice.text == "Yes "  # stop strings cut the answer only
    assert "".join(e.reasoning or "" for e in events) == choice.reasoning
    assert "".join(e.text for e in events) == choice.text
    assert usage.completion_tokens_details.reasoning_tokens == 6
    assert [e.token for e in choice.logprobs] == ["Yes", " stop"]  # the answer's tokens only (" stop" gave its " ")


def test_a_row_of_a_model_that_does_not_think_is_as_before():
    request, events = run_row(["<think>", "Hi"], None)
    assert request.result.choices[0].text == "<think>Hi" and request.result.choices[0].reasoning is None
    assert request.result.usage.completion_tokens_details is None
    assert "completion_tokens_details" not in request.result.usage.model_dump()
    assert all(e.reasoning is None for e in events)


def test_calls_after_the_thinking_are_read_as_calls():
    call = call_text("now", "{}")
    request, _ = run_row(
        ["<think>", "I need the time.", "</think>", "\n", call[:9], call[9:]],
        "may_open",
        grammar="g",
        tool_calls="auto",
    )
    choice = request.result.choices[0]
    assert choice.reasoning == "I need the time." and choice.text == ""
    assert [c.name for c in choice.tool_calls] == ["now"] and choice.finish_reason == "tool_calls"
