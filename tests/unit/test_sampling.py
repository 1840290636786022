"""Choosing a row's next token: greedy or sampled, with the row's own options and seed."""

import numpy as np

from contracts.jobs import SamplingParams
from worker.engines.sampling import RowSampler

LOGITS = np.array([0.1, 3.0, 2.9, -1.0, 0.5], dtype=np.float32)
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}


def picks(sampler: RowSampler, times: int = 200) -> list[int]:
    return [sampler.pick(LOGITS) for _ in range(times)]


def test_temperature_zero_is_greedy():
    assert set(picks(RowSampler(SamplingParams(temperature=0), SAMPLING_DEFAULTS))) == {1}


def test_omitted_options_follow_the_models_defaults_greedy():
    assert RowSampler(SamplingParams(), {"do_sample": False}).greedy


def test_omitted_options_follow_the_models_defaults_sampling():
    assert not RowSampler(SamplingParams(), SAMPLING_DEFAULTS).greedy


def test_asking_for_any_sampling_option_samples_even_if_the_model_is_greedy():
    assert not RowSampler(SamplingParams(top_p=0.9), {"do_sample": False}).greedy


def test_top_k_one_always_picks_the_most_likely_token():
    assert set(picks(RowSampler(SamplingParams(top_k=1, temperature=1.0), {}))) == {1}


def test_top_k_keeps_only_the_k_most_likely_tokens():
    assert set(picks(RowSampler(SamplingParams(top_k=2, temperature=5.0), {}))) <= {1, 2}


def test_a_small_top_p_keeps_only_the_head_of_the_distribution():
    assert set(picks(RowSampler(SamplingParams(top_p=0.01, temperature=1.0), {}))) == {1}


def test_the_same_seed_and_stream_give_the_same_tokens():
    options = SamplingParams(temperature=5.0, seed=7)
    assert picks(RowSampler(options, {}, stream=0)) == picks(RowSampler(options, {}, stream=0))


def test_another_stream_of_the_same_seed_gives_other_tokens():
    options = SamplingParams(temperature=5.0, seed=7)
    assert picks(RowSampler(options, {}, stream=0)) != picks(RowSampler(options, {}, stream=1))
