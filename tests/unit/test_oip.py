"""The Open Inference Protocol's documents for the replica's model (fleet_inference/oip.py): pure."""
import dataclasses
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fleet_inference import oip
from fleet_inference.model_store import Manifest
from fleet_inference.oip import check_model, infer_response, model_metadata, parse_infer, split_body
from fleet_inference.validation import InputError

M = Manifest(name="tabular-mlp", version="2", sha256="0" * 64, file="model.pt", input_shape=(8,), num_classes=4,
             accuracy=0.9, input_range=(-1e4, 1e4))
ROW = [0.5] * 8


def request(data, shape=(1, 8), datatype="FP32", name="input", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}], **extra}


def test_metadata_declares_the_models_tensors():
    doc = model_metadata(M)
    assert doc["name"] == "tabular-mlp" and doc["versions"] == ["2"] and doc["platform"] == "pytorch_torchscript"
    assert model_metadata(dataclasses.replace(M, file="model.pt2"))["platform"] == "pytorch_export"
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in doc["outputs"]] == [
        ("probabilities", "FP32", [-1, 4]), ("label", "INT64", [-1])]


@pytest.mark.parametrize("data", [ROW * 2, [ROW, ROW]], ids=["flat", "nested"])
def test_flat_or_nested_data_become_rows(data):
    (rows,), outputs, rid = parse_infer(request(data, (2, 8), "FP64", id="r-1"), M, 64)
    assert rows.tolist() == [ROW, ROW] and outputs == ["probabilities", "label"] and rid == "r-1"


def test_integer_datatypes_are_converted_and_outputs_can_be_chosen():
    (rows,), outputs, rid = parse_infer(request([1] * 8, datatype="INT64", outputs=[{"name": "label"}]), M, 64)
    assert rows.tolist() == [[1.0] * 8] and outputs == ["label"] and rid is None


BAD = [
    ("not-a-request", {"inputs": "x"}, 400, '"inputs": [{"name": "input"'),
    ("two-inputs", {"inputs": [request(ROW)["inputs"][0]] * 2}, 400, "exactly one input tensor"),
    ("wrong-name", request(ROW, name="x"), 400, "the model's input is named 'input'"),
    ("bytes", request(ROW, datatype="BYTES"), 400, "datatype 'BYTES': send FP32"),
    ("rank-1", request(ROW, shape=(8,)), 400, "the model takes [N, 8]"),
    ("wrong-features", request(ROW, shape=(2, 4)), 400, "the model takes [N, 8] with N >= 1"),
    ("too-few-values", request(ROW[:7]), 400, "has 7 values for shape [1, 8]: send 8"),
    ("too-many-values", request(ROW * 3, shape=(2, 8)), 400, "has 17 values for shape [2, 8]: send 16"),
    ("too-deep", request([[ROW]]), 400, "nested deeper than its shape"),
    ("a-string", request(ROW[:7] + ["1"]), 400, "value 7 is str, not a number"),
    ("a-bool", request([True] + ROW[1:]), 400, "value 0 is bool"),
    ("nan", request(ROW[:7] + [float("nan")]), 400, "only finite FP32 values"),
    ("beyond-fp32", request([1e39] + ROW[1:]), 400, "beyond FP32"),
    ("huge-integer", request([10 ** 400] + ROW[1:]), 400, "an integer beyond FP32"),
    ("outside-the-range", request([2e4] + ROW[1:]), 400, "value 0 is 20000, outside the model's input range"),
    ("unknown-output", request(ROW, outputs=[{"name": "logits"}]), 400, "unknown output(s) ['logits']"),
    ("too-many-rows", request(ROW * 65, shape=(65, 8)), 413, "65 rows, over the limit of 64"),
]


@pytest.mark.parametrize("payload,status,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_name_the_problem(payload, status, message):
    with pytest.raises(InputError) as e:
        parse_infer(payload, M, 64)
    assert e.value.status == status
    assert message in str(e.value)


def test_a_path_naming_another_model_or_version_is_a_404_naming_what_is_served():
    check_model(M, "tabular-mlp", None)
    check_model(M, "tabular-mlp", "2")
    with pytest.raises(InputError) as e:
        check_model(M, "resnet", None)
    assert e.value.status == 404 and "serves 'tabular-mlp'" in str(e.value)
    with pytest.raises(InputError) as e:
        check_model(M, "tabular-mlp", "1")
    assert e.value.status == 404 and "serves version '2'" in str(e.value)


def test_the_response_holds_the_asked_outputs_row_major():
    doc = infer_response(M, [0.1, 0.2, 0.3, 0.4, 0.4, 0.3, 0.2, 0.1], 2, [3, 0], ["label", "probabilities"], 7)
    assert doc["model_name"] == "tabular-mlp" and doc["model_version"] == "2" and doc["id"] == 7
    assert doc["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [3, 0]},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 4], "data": [0.1, 0.2, 0.3, 0.4, 0.4, 0.3, 0.2, 0.1]}]


def test_binary_tensor_data_after_the_json_is_read_as_the_datatype_says():
    import numpy as np
    raw = np.array([ROW, ROW], dtype="<f4").tobytes()
    doc = request(None, (2, 8), parameters=None)
    doc["inputs"][0].pop("data")
    doc["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(doc).encode()
    payload, binary = split_body(head + raw, str(len(head)))
    assert parse_infer(payload, M, 64, binary)[0][0].tolist() == [ROW, ROW]
    with pytest.raises(InputError, match="binary_data_size 64, but 63 bytes follow"):
        parse_infer(payload, M, 64, binary[:-1])
    with pytest.raises(InputError, match="Inference-Header-Content-Length is '9999'"):
        split_body(head + raw, "9999")
    doc["inputs"][0]["datatype"] = "FP64"  # 64 bytes of FP64 are 8 values, not 16
    with pytest.raises(InputError, match="has 8 values for shape \\[2, 8\\]"):
        parse_infer(doc, M, 64, raw)


@pytest.mark.parametrize("header", ["\u00b2", "1\u00b2", "\u0663", "\uff11", "-1", "+5", " 5", "5 ", "", "0x10", "1e3"])
def test_a_binary_header_that_is_not_ascii_digits_is_a_400_naming_it(header):
    """'²', Arabic-Indic and full-width digits pass str.isdigit() and then fail int(): a 500 before the fix."""
    with pytest.raises(InputError, match="Inference-Header-Content-Length is") as e:
        split_body(b'{"inputs": []}', header)
    assert e.value.status == 400


VALUE = st.one_of(st.floats(), st.integers(-2**60, 2**60), st.booleans(), st.none(), st.text(max_size=2),
                  st.sampled_from([-1.0, 1.0, 3.5e38, -3.4028234663852886e38, 10**400, -2**200]))


@given(values=st.lists(VALUE, min_size=1, max_size=12), value_range=st.sampled_from([None, (-1.0, 1.0)]),
       dtype=st.sampled_from(["FP32", "FP16", "FP64", "INT64", "INT32", "UINT8"]))
@example(values=[0.5, 10**400], value_range=None, dtype="FP32")
@example(values=[True, 0.0], value_range=None, dtype="FP32")
@example(values=[1.0, 2.5], value_range=None, dtype="INT64")
@example(values=[70000.0], value_range=None, dtype="FP16")
def test_the_check_of_all_values_at_once_agrees_with_the_value_by_value_one(values, value_range, dtype):
    """The tensor's values checked at once with numpy (the fast path) accept exactly what the check value by
    value accepts, which names the first value that is wrong, for every input datatype."""
    m = dataclasses.replace(M, input_range=value_range, input_dtype=dtype)
    at_once = oip._checked(values, m.inputs[0])
    try:
        oip._first_wrong(values, m.inputs[0])
        one_by_one = True
    except InputError:
        one_by_one = False
    assert (at_once is not None) == one_by_one
    if at_once is not None:
        assert at_once.tolist() == [float(v) for v in values]


def test_the_metadata_and_a_bad_datatype_name_the_models_input_datatype():
    tokens = dataclasses.replace(M, input_dtype="INT64", input_range=(0, 16))
    assert model_metadata(tokens)["inputs"] == [{"name": "input", "datatype": "INT64", "shape": [-1, 8]}]
    with pytest.raises(InputError, match="datatype 'BYTES': send INT64"):
        parse_infer(request([1] * 8, datatype="BYTES"), tokens, 64)
    with pytest.raises(InputError, match="value 7 is 2.5, not a whole number: the model takes INT64"):
        parse_infer(request([1] * 7 + [2.5], datatype="FP32"), tokens, 64)
    assert parse_infer(request([16] * 8, datatype="INT64"), tokens, 64)[0][0].tolist() == [[16.0] * 8]
