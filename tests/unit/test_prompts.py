"""Fitting prompts to the model's context, with room for the answer."""

import pytest

from contracts.jobs import GenerationJob
from worker.errors import JobRejected
from worker.models.prompts import fit_prompts, message_text, template_setting, template_variables


def completion(prompts: int = 1, **fields) -> GenerationJob:
    return GenerationJob(job_id="j", model="m", prompts=["p"] * prompts, **fields)


def test_text_parts_of_a_message_are_joined():
    assert message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"


def test_a_message_without_content_is_empty_text():
    assert message_text(None) == ""


def test_prompts_that_fit_are_kept_whole():
    fitted, truncated, max_tokens = fit_prompts([[1, 2, 3]], completion(max_tokens=5), context=10)
    assert (fitted, truncated, max_tokens) == ([[1, 2, 3]], [False], 5)


def test_omitted_max_tokens_is_the_rest_of_the_context():
    _, _, max_tokens = fit_prompts([[1, 2, 3], [1]], completion(prompts=2), context=10)
    assert max_tokens == 7  # the longest prompt decides


def test_a_prompt_past_the_context_rejects_the_job_naming_that_prompt():
    with pytest.raises(JobRejected) as rejected:
        fit_prompts([[1], [1, 2, 3, 4, 5, 6, 7, 8]], completion(prompts=2, max_tokens=4), context=10)
    assert rejected.value.info.code == "context_length_exceeded"
    assert "prompt[1]" in rejected.value.info.message
    assert rejected.value.info.param == "prompt"


def test_a_chat_past_the_context_names_the_messages():
    job = GenerationJob(job_id="j", model="m", messages=[{"role": "user", "content": "x"}], max_tokens=4)
    with pytest.raises(JobRejected) as rejected:
        fit_prompts([list(range(9))], job, context=10)
    assert rejected.value.info.param == "messages"


def test_truncate_keeps_the_last_tokens_of_a_long_prompt():
    fitted, truncated, _ = fit_prompts([[1, 2, 3, 4, 5, 6, 7, 8]], completion(max_tokens=4, truncate=True), context=10)
    assert fitted == [[3, 4, 5, 6, 7, 8]]
    assert truncated == [True]


def test_the_effort_is_a_template_variable_only_when_given():
    assert template_variables("high") == {"reasoning_effort": "high"}
    assert template_variables(None) == {}


def test_onnxruntime_genais_template_sets_the_variables_at_its_top():
    template = "{{ reasoning_effort }}"
    setting = '{%- set reasoning_effort = "high" -%}'
    assert template_setting(template, {"reasoning_effort": "high"}) == setting + template
    assert template_setting(template, {}) == template
    assert template_setting("", {"reasoning_effort": "high"}) == ""  # no template to set them in
