"""Where a model folder keeps its chat template: chat_template.jinja, else tokenizer_config.json."""

import json

from worker.models.chat_tokenizer import chat_template


def test_the_jinja_file_comes_first(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "other"}))
    assert chat_template(tmp_path) == "{{ messages }}"


def test_a_template_in_tokenizer_config_is_used_without_the_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ bos_token }}"}))
    assert chat_template(tmp_path) == "{{ bos_token }}"


def test_named_templates_give_the_default_one(tmp_path):
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert chat_template(tmp_path) == "plain"


def test_a_folder_without_a_template_has_an_empty_one(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8}))
    assert chat_template(tmp_path) == ""
