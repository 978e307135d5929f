"""fleet/cli.py's own words: the build summary's inputs, from a base image of today or of before models
of several inputs (its check reports input_shape and input_dtype, no `inputs`)."""
from fleet.cli import inputs_text


def test_the_build_summary_names_each_input_of_todays_check():
    check = {"inputs": [{"name": "image", "shape": [1, 8, 8], "datatype": "FP32"},
                        {"name": "mask", "shape": [1, 8, 8], "datatype": "UINT8"}]}
    assert inputs_text(check) == "image [1, 8, 8] FP32, mask [1, 8, 8] UINT8"


def test_the_build_summary_reads_an_older_bases_check_without_a_key_error():
    assert inputs_text({"input_shape": [8], "input_dtype": "INT64"}) == "[8] INT64"
    assert inputs_text({"input_shape": [8]}) == "[8] FP32"


def test_a_fleet_error_in_a_commands_body_exits_with_its_code_and_says_why(capsys):
    import json

    import pytest
    import typer

    from fleet.cli import failing
    from fleet.errors import BadInput, Unreachable
    for error, code in ((BadInput("--image: no such image"), 2), (Unreachable("Consul does not answer"), 3)):
        with pytest.raises(typer.Exit) as exit_:
            with failing(as_json=True):
                raise error
        assert exit_.value.exit_code == code
        assert json.loads(capsys.readouterr().out) == {"ok": False, "exit_code": code, "error": str(error)}
    with failing(as_json=False):
        done = True  # no error: the body runs to its end, nothing printed
    assert done and capsys.readouterr().out == ""
