"""The pure parts of logprobs: values from logits, token bytes, alignment with released text, and
the legacy completions shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.events import TokenLogprob, TopLogprob
from contracts.legacy_logprobs import LegacyLogprobs, choice_logprobs
from worker.engines.logprob_alignment import LogprobAligner
from worker.engines.token_logprobs import FLOOR, TokenLogprobs, log_softmax, top_tokens
from worker.models.token_bytes import byte_level_alphabet, token_text

LOGITS = np.array([0.1, 3.0, 2.9, -1.0, 3.0], dtype=np.float32)
TABLE = [b"a", b"b", b" c", b"\xe2", "\u2603".encode()]


def entry(token: str, data: bytes, logprob: float = -1.0) -> TokenLogprob:
    return TokenLogprob(token=token, logprob=logprob, bytes=list(data), top_logprobs=[])


def test_log_softmax_is_a_distribution():
    values = log_softmax(LOGITS)
    assert math.isclose(sum(math.exp(v) for v in values), 1.0, rel_tol=1e-6)
    assert np.argmax(values) == np.argmax(LOGITS)


def test_top_tokens_are_sorted_with_ties_by_id_and_capped_by_the_vocabulary():
    assert top_tokens(log_softmax(LOGITS), 3).tolist() == [1, 4, 2]
    assert top_tokens(log_softmax(LOGITS), 0).tolist() == []
    assert len(top_tokens(log_softmax(LOGITS), 20)) == len(LOGITS)


def test_entry_reports_the_chosen_token_and_its_alternatives():
    table = TokenLogprobs(TABLE)
    chosen = table.entry(LOGITS, 3, 2)
    assert chosen.token == "bytes:\\xe2" and chosen.bytes == [0xE2]
    assert chosen.logprob == pytest.approx(float(log_softmax(LOGITS)[3]))
    assert [t.token for t in chosen.top_logprobs] == ["b", "\u2603"]
    assert table.entry(np.array([0.0, -np.inf, 0, 0, 0]), 1, 0).logprob == FLOOR


def test_prompt_entries_start_without_a_logprob():
    table = TokenLogprobs(TABLE)
    first = table.first(2)
    assert (first.token, first.logprob, first.top_logprobs) == (" c", None, None)
    following = table.following(np.stack([LOGITS, LOGITS]), [0, 1], 1)
    assert [e.token for e in following] == ["a", "b"] and following[1].logprob == following[1].top_logprobs[0].logprob


def test_byte_level_alphabet_covers_every_byte_once():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["Ġ"] == ord(" ") and alphabet["a"] == ord("a")


def test_token_text_names_partial_characters_by_their_bytes():
    assert token_text(b" hi") == " hi"
    assert token_text(b"\xe2\x98") == "bytes:\\xe2\\x98"


def test_aligner_sends_entries_with_the_text_they_decoded_to():
    aligner = LogprobAligner()
    aligner.add(entry("a", b"a"), 1)
    assert [e.token for e in aligner.release(1)] == ["a"]
    # A character split over two tokens: the first decodes to nothing, both go with the character.
    aligner.add(entry("x1", b"\xe2\x98"), 0)
    assert aligner.release(0) == []
    aligner.add(entry("x2", b"\x83"), 1)
    assert [e.token for e in aligner.release(1)] == ["x1", "x2"]


def test_aligner_holds_entries_whose_text_is_held_back():
    aligner = LogprobAligner()
    aligner.add(entry("ab", b"ab"), 2)
    assert aligner.release(1) == []  # "b" may start a stop string
    aligner.add(entry("c", b"c"), 1)
    assert [e.token for e in aligner.release(2)] == ["ab", "c"]


def test_aligner_drops_tokens_wholly_inside_a_stop_string():
    aligner = LogprobAligner()
    for token in ("Hi", " ST", "OP"):
        aligner.add(entry(token, token.encode()), len(token))
    assert [e.token for e in aligner.release(2)] == ["Hi"]
    assert [e.token for e in aligner.finish(1)] == [" ST"]  # released "Hi ", the stop "STOP" cut


def test_aligner_finish_without_a_stop_sends_everything_left():
    aligner = LogprobAligner()
    aligner.add(entry("x1", b"\xe2"), 0)  # a character the length limit cut in half
    assert [e.token for e in aligner.finish(0)] == ["x1"]


def test_legacy_offsets_run_on_over_pieces_and_split_characters():
    builder = LegacyLogprobs()
    first = builder.piece([entry("a", b"a"), entry("x1", b"\xe2\x98")])
    second = builder.piece([entry("x2", b"\x83"), entry("b", b"b")])
    assert first["text_offset"] + second["text_offset"] == [0, 1, 1, 2]


def test_legacy_alternatives_always_hold_the_chosen_token_sorted():
    chosen = TokenLogprob(
        token="z", logprob=-3.0, bytes=[122], top_logprobs=[TopLogprob(token="a", logprob=-0.5, bytes=[97])]
    )
    body = choice_logprobs([chosen], None, None)
    assert body == {
        "tokens": ["z"],
        "token_logprobs": [-3.0],
        "top_logprobs": [{"a": -0.5, "z": -3.0}],
        "text_offset": [0],
    }


def test_legacy_echo_puts_the_prompt_first_and_offsets_the_output_after_it():
    prompt = [TokenLogprob(token="Hi", logprob=None, bytes=list(b"Hi"), top_logprobs=None), entry(" you", b" you")]
    body = choice_logprobs([entry("!", b"!")], prompt, "Hi you")
    assert body["tokens"] == ["Hi", " you", "!"] and body["text_offset"] == [0, 2, 6]
    assert body["token_logprobs"][0] is None and body["top_logprobs"][0] is None
    assert choice_logprobs(None, prompt, "Hi you") is None
