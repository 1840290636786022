"""API keys as configured: the variable and the file, their IDs, and which presented key matches."""

from pathlib import Path

import pytest

from api.access.keys import ApiKeys, configured_keys, key_id
from contracts.settings import Settings


def test_keys_come_from_the_variable_and_the_file(tmp_path: Path):
    key_file = tmp_path / "keys"
    key_file.write_text("# comment\n\n  key-b  \nkey-c\n")
    settings = Settings.from_env({"LADLE_API_KEYS": "key-a, ,", "LADLE_API_KEYS_FILE": str(key_file)})
    assert configured_keys(settings) == ["key-a", "key-b", "key-c"]


def test_an_unreadable_key_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="LADLE_API_KEYS_FILE"):
        configured_keys(Settings(api_keys_file=tmp_path / "missing"))


def test_a_key_is_identified_by_its_hash_and_never_kept():
    keys = ApiKeys(["secret-one", "secret-two"])
    assert keys.enabled
    assert keys.identify(["wrong", "secret-two"]) == key_id("secret-two")
    assert keys.identify(["wrong"]) is None
    assert keys.identify([]) is None
    assert "secret-one" not in repr(vars(keys))
    assert key_id("secret-one") != key_id("secret-two") and len(key_id("secret-one")) == 64


def test_no_keys_means_open():
    assert not ApiKeys([]).enabled
