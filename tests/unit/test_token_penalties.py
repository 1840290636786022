"""Each penalty and bias changes a row's logits as its definition says (OpenAI's frequency and
presence penalties, transformers' and vLLM's repetition penalty, logit_bias), and min_p keeps only
tokens at least that share of the most likely one's probability."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.jobs import SamplingParams
from worker.engines.sampling import RowSampler
from worker.engines.token_penalties import TokenPenalties

LOGITS = np.array([2.0, -1.0, 0.5, 3.0, -2.0, 1.0], dtype=np.float32)


def penalised(prompt: list[int], output: list[int], **knobs) -> np.ndarray:
    penalties = TokenPenalties(SamplingParams(**knobs), prompt)
    for token in output:
        penalties.observe(token)
    return penalties.apply(LOGITS)


def test_frequency_penalty_subtracts_per_occurrence_in_the_output_only():
    adjusted = penalised([1, 2], [3, 3, 0], frequency_penalty=0.5)
    assert adjusted.tolist() == pytest.approx([2.0 - 0.5, -1.0, 0.5, 3.0 - 2 * 0.5, -2.0, 1.0])


def test_presence_penalty_subtracts_once_per_token_in_the_output():
    adjusted = penalised([1, 2], [3, 3, 0], presence_penalty=0.75)
    assert adjusted.tolist() == pytest.approx([2.0 - 0.75, -1.0, 0.5, 3.0 - 0.75, -2.0, 1.0])


def test_negative_penalties_favour_what_was_said():
    adjusted = penalised([], [5], frequency_penalty=-1.0, presence_penalty=-0.5)
    assert adjusted[5] == pytest.approx(1.0 + 1.5)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_prompt_and_output():
    adjusted = penalised([1, 2], [3], repetition_penalty=2.0)
    assert adjusted.tolist() == pytest.approx([2.0, -2.0, 0.25, 1.5, -2.0, 1.0])


def test_logit_bias_is_added_before_the_penalties():
    adjusted = penalised([], [0], logit_bias={0: 4.0, 4: -100.0}, frequency_penalty=1.0)
    assert adjusted[0] == pytest.approx(2.0 + 4.0 - 1.0) and adjusted[4] == pytest.approx(-102.0)


def test_no_knobs_leave_the_row_plain():
    sampler = RowSampler(SamplingParams(temperature=0), {})
    assert sampler.plain and sampler.penalties is None
    assert not RowSampler(SamplingParams(temperature=0, presence_penalty=0.1), {}).plain
    assert RowSampler(SamplingParams(temperature=0, repetition_penalty=1.0), {}).plain


def test_greedy_rows_pick_the_argmax_after_penalties():
    sampler = RowSampler(SamplingParams(temperature=0, logit_bias={3: -10.0}), {})
    assert sampler.pick(LOGITS) == 0


def test_min_p_one_keeps_only_the_most_likely_token_whatever_the_seed():
    picks = {RowSampler(SamplingParams(temperature=2.0, min_p=1.0, seed=s), {}).pick(LOGITS) for s in range(50)}
    assert picks == {3}


def test_min_p_drops_tokens_below_its_share_of_the_top_probability():
    probabilities = np.exp(LOGITS - LOGITS.max())  # relative to the most likely token, temperature 1
    allowed = {i for i, p in enumerate(probabilities) if p >= 0.3}
    picks = {RowSampler(SamplingParams(temperature=1.0, min_p=0.3, seed=s), {}).pick(LOGITS) for s in range(400)}
    assert picks == allowed == {0, 3}
