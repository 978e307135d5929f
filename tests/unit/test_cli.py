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
