"""Credentials as files (Swarm secrets): fleet's and the replica's CONSUL_HTTP_TOKEN_FILE."""
import pytest

from fleet.adapters.consul import token_from
from fleet.errors import BadInput
from fleet_inference.config import Settings


def test_the_token_comes_from_the_variable_first_then_the_file(tmp_path):
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert token_from({"CONSUL_HTTP_TOKEN_FILE": str(f)}) == "from-file"
    assert token_from({"CONSUL_HTTP_TOKEN": "direct", "CONSUL_HTTP_TOKEN_FILE": str(f)}) == "direct"
    assert token_from({}) is None
    assert Settings.from_env({"CONSUL_HTTP_TOKEN_FILE": str(f)}).consul_token == "from-file"


def test_an_unreadable_token_file_is_bad_input_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(BadInput, match=f"CONSUL_HTTP_TOKEN_FILE={missing}: cannot read it") as e:
        token_from({"CONSUL_HTTP_TOKEN_FILE": str(missing)})
    assert e.value.exit_code == 2
    with pytest.raises(ValueError, match="cannot read it"):
        Settings.from_env({"CONSUL_HTTP_TOKEN_FILE": str(missing)})
