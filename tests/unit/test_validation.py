import pytest

from fleet_inference.validation import InputError, parse_body, validate_inputs

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
        validate_inputs(payload, features=8, max_rows=64)
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
