import pytest

from fleet_inference.validation import InputError, check_content_type, parse_body, validate_inputs

ROW = [0.0] * 8

BAD = [
    ("not-an-object", [ROW], 422, "JSON object"),
    ("missing-inputs", {"rows": [ROW]}, 422, "JSON object"),
    ("extra-field", {"inputs": [ROW], "x": 1}, 422, "unknown field"),
    ("empty", {"inputs": []}, 422, "non-empty"),
    ("row-not-list", {"inputs": [1.0]}, 422, "inputs[0] must be a list"),
    ("wrong-shape", {"inputs": [[1.0, 2.0]]}, 422, "has 2 values; the model takes 8"),
    ("string-value", {"inputs": [["1"] + ROW[1:]]}, 422, "inputs[0][0] is str"),
    ("bool-value", {"inputs": [[True] + ROW[1:]]}, 422, "inputs[0][0] is bool"),
    ("null-value", {"inputs": [ROW[:7] + [None]]}, 422, "inputs[0][7] is NoneType"),
    ("nan", {"inputs": [ROW[:7] + [float("nan")]]}, 422, "inputs[0][7] is nan: only finite"),
    ("inf", {"inputs": [[float("inf")] + ROW[1:]]}, 422, "only finite"),
    ("too-many-rows", {"inputs": [ROW] * 65}, 413, "over the limit of 64"),
]


@pytest.mark.parametrize("payload,status,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_name_the_problem(payload, status, message):
    with pytest.raises(InputError) as e:
        validate_inputs(payload, shape=8, max_rows=64)
    assert e.value.status == status
    assert message in str(e.value)


def test_good_inputs_become_floats():
    assert validate_inputs({"inputs": [[1] * 8, ROW]}, 8, 64) == [[1.0] * 8, ROW]


@pytest.mark.parametrize("body,status", [(b"{not json", 400), (b"\xff\xfe", 400), (b"x" * 101, 413)],
                         ids=["malformed", "not-utf8", "oversized"])
def test_body_errors(body, status):
    with pytest.raises(InputError) as e:
        parse_body(body, max_bytes=100)
    assert e.value.status == status


def test_json_nan_literal_parses_then_is_rejected():
    payload = parse_body(b'{"inputs": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', 1000)
    with pytest.raises(InputError, match="only finite"):
        validate_inputs(payload, 8, 64)


def test_deep_nesting_is_a_400_not_a_recursion_error():
    with pytest.raises(InputError) as e:
        parse_body(b"[" * 100_000 + b"]" * 100_000, max_bytes=1_000_000)
    assert e.value.status == 400 and "nested too deeply" in str(e.value)


def test_an_integer_beyond_any_float_is_a_422():
    with pytest.raises(InputError, match="integer beyond any float") as e:
        validate_inputs({"inputs": [[10 ** 400] + ROW[1:]]}, 8, 64)
    assert e.value.status == 422


@pytest.mark.parametrize("header", [None, "", "application/json", "application/json; charset=utf-8",
                                    "application/vnd.api+json"])
def test_json_or_no_content_type_is_accepted(header):
    check_content_type(header)


@pytest.mark.parametrize("header", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"])
def test_other_content_types_are_a_415_naming_the_fix(header):
    with pytest.raises(InputError, match="Content-Type: application/json") as e:
        check_content_type(header)
    assert e.value.status == 415


def test_a_value_outside_the_models_declared_range_is_a_422_naming_the_range():
    assert validate_inputs({"inputs": [[1e4] * 8]}, 8, 64, (-1e4, 1e4)) == [[1e4] * 8]
    with pytest.raises(InputError) as e:
        validate_inputs({"inputs": [ROW, ROW[:7] + [-2e4]]}, 8, 64, (-1e4, 1e4))
    assert e.value.status == 422
    assert "inputs[1][7] is -20000, outside the model's input range [-10000, 10000]" in str(e.value)
    assert validate_inputs({"inputs": [[1e30] * 8]}, 8, 64) == [[1e30] * 8]  # a manifest without a range


@pytest.mark.parametrize("dtype,value,words", [
    ("INT64", 2.5, "inputs[0][0] is 2.5, not a whole number: the model takes INT64"),
    ("INT64", 2 ** 53, "outside INT64's values"),  # an integer input travels as a float: exact ones only
    ("UINT8", 256, "is 256, outside UINT8's values [0, 255]"),
    ("UINT8", -1, "outside UINT8's values"),
    ("INT32", 2 ** 31, "outside INT32's values"),
    ("FP16", 70000.0, "is 70000 beyond FP16: only finite FP16 values are accepted"),
    ("FP32", 1e39, "beyond FP32"),
])
def test_a_value_the_models_input_datatype_cannot_hold_is_a_422_naming_it(dtype, value, words):
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")) as e:
        validate_inputs({"inputs": [[value] + ROW[1:]]}, 8, 64, dtype=dtype)
    assert e.value.status == 422


@pytest.mark.parametrize("dtype,row", [("INT64", [3, 2.0, 0, 1, 2 ** 53 - 1, -5, 7, 8]), ("UINT8", [255] * 8),
                                       ("FP16", [65504.0, -1.5] + ROW[2:]), ("FP64", [1e300] + ROW[1:])])
def test_values_the_datatype_holds_pass(dtype, row):
    assert validate_inputs({"inputs": [row]}, 8, 64, dtype=dtype) == [[float(v) for v in row]]
