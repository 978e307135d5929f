"""A model package's checks that need no torch or Docker (fleet/package.py), its reproducible build
context, rows of a multi-dimensional input shape (an image's [1, 2, 2]) on both APIs, and the golden
gate of a model of plain tensor outputs."""
import io
import json
import tarfile

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fleet.adapters.builder import split
from fleet.adapters.gateway import GoldenSet
from fleet.core.analysis import Outcome, judge_golden_outputs
from fleet.errors import BadInput
from fleet.package import read_package, write_context
from fleet_inference.model_store import Manifest
from fleet_inference.oip import parse_infer
from fleet_inference.validation import InputError, validate_inputs


def package(tmp_path, **changes):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "golden.json").write_text(json.dumps({"inputs": [], "labels": []}))
    manifest = {"name": "digits", "version": 3, "input_shape": [1, 2, 2], "num_classes": 10, "accuracy": 0.9,
                "golden": {"file": "golden.json", "size": 0, "accuracy": 0.9}, **changes}
    (tmp_path / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))
    return tmp_path


def test_a_good_package_gets_its_checksum_and_labels(tmp_path):
    p = read_package(package(tmp_path))
    assert p.version == "3" and p.files == ("golden.json", "model.pt")
    assert p.labels["fleet.model-version"] == "3" and p.labels["fleet.model"] == "digits"
    assert p.manifest["sha256"] == p.labels["fleet.model-sha256"] and len(p.manifest["sha256"]) == 64


@pytest.mark.parametrize("changes,words", [
    ({"golden": None}, "lacks the field(s) ['golden']"),
    ({"version": "2 beta"}, "version '2 beta' must be letters"),
    ({"file": "weights.pt"}, "file 'weights.pt' (the weights) is not in"),
    ({"sha256": "0" * 64}, "sha256 000000000000… does not match model.pt"),
    ({"golden": {"file": "nowhere.json"}}, "golden must be"),
])
def test_a_bad_manifest_names_the_field(tmp_path, changes, words):
    with pytest.raises(BadInput) as e:
        read_package(package(tmp_path, **changes))
    assert words in str(e.value), str(e.value)


def test_the_build_context_is_the_same_bytes_for_the_same_package(tmp_path):
    p = read_package(package(tmp_path))
    first, second = io.BytesIO(), io.BytesIO()
    write_context(p, "fleet/inference:base", first)
    (tmp_path / "model.pt").touch()  # a new time on a file: the same content
    write_context(read_package(tmp_path), "fleet/inference:base", second)
    assert first.getvalue() == second.getvalue()
    inner = tarfile.open(fileobj=io.BytesIO(tarfile.open(fileobj=io.BytesIO(first.getvalue())).extractfile(
        "package.tar").read()))
    assert {m.name for m in inner.getmembers()} >= {"models/package/manifest.json", "models/package/model.pt"}
    assert {m.mtime for m in inner.getmembers()} == {0}


IMAGE = Manifest(name="digits", version="3", sha256="0" * 64, file="model.pt", input_shape=(1, 2, 2),
                 num_classes=10, accuracy=0.9)


def test_rows_of_an_image_shape_are_nested_to_it_and_come_out_flat():
    assert validate_inputs({"inputs": [[[[1, 2], [3, 4]]]]}, IMAGE.input_shape, 8) == [[1.0, 2.0, 3.0, 4.0]]
    with pytest.raises(InputError) as e:
        validate_inputs({"inputs": [[1, 2, 3, 4]]}, IMAGE.input_shape, 8)
    assert "inputs[0] has 4 values; the model takes 1 there (each row has shape [1, 2, 2])" in str(e.value)
    with pytest.raises(InputError) as e:
        validate_inputs({"inputs": [[[[1, 2], [3]]]]}, IMAGE.input_shape, 8)
    assert "inputs[0][0][1] has 1 values; the model takes 2 there" in str(e.value)


def test_the_open_inference_protocol_takes_the_batched_image_shape():
    request = {"inputs": [{"name": "input", "shape": [2, 1, 2, 2], "datatype": "FP32", "data": list(range(8))}]}
    (rows,), _, _ = parse_infer(request, IMAGE, 8)
    assert rows.tolist() == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    request["inputs"][0]["shape"] = [2, 4]
    with pytest.raises(InputError) as e:
        parse_infer(request, IMAGE, 8)
    assert e.value.status == 400 and "the model takes [N, 1, 2, 2]" in str(e.value)


def test_a_tensor_model_manifest_declares_its_output_shape_and_a_tolerance():
    m = Manifest.parse({"name": "e", "version": "1", "sha256": "0" * 64, "input_shape": [1, 8, 8], "output": "tensor",
                        "output_shape": [2], "golden": {"file": "golden.json", "tolerance": 0.001}})
    assert not m.classifies and m.output_shape == (2,) and m.num_classes == 0
    with pytest.raises(ValueError, match="golden.tolerance None must be a number"):
        Manifest.parse({"name": "e", "version": "1", "sha256": "0", "input_shape": [4], "output": "tensor",
                        "output_shape": [2], "golden": {"file": "golden.json"}})
    with pytest.raises(ValueError, match="output 'boxes' is unknown"):
        Manifest.parse({"name": "e", "version": "1", "sha256": "0", "input_shape": [4], "output": "boxes"})


@pytest.mark.parametrize("dtype,torch_dtype", [("INT64", torch.int64), ("UINT8", torch.uint8), ("FP16", torch.float16),
                                               ("FP32", torch.float32), (None, torch.float32)])
def test_a_manifest_declares_the_datatype_its_model_is_fed(dtype, torch_dtype):
    doc = {"name": "t", "version": "1", "sha256": "0", "input_shape": [64], "num_classes": 10, "accuracy": 0.9}
    m = Manifest.parse({**doc, "input_dtype": dtype} if dtype else doc)
    assert m.input_dtype == (dtype or "FP32") and m.torch_dtype == torch_dtype
    with pytest.raises(ValueError, match="input_dtype 'BF8' is unknown: the service takes FP16, FP32, FP64, UINT8"):
        Manifest.parse({**doc, "input_dtype": "BF8"})


REST = [[0.0, 1.0]] * 8  # rows both answer alike, so that the set has the gate's minimum of 10


@pytest.mark.parametrize("canary,outcome,words", [
    ([[0.1, 0.2], [0.3, 0.4]] + REST, Outcome.PASS, "by at most 0 on 10 golden rows"),
    ([[0.1005, 0.2], [0.3, 0.4]] + REST, Outcome.PASS, "by at most 0.0005"),
    ([[0.1, 0.2], [0.3, 0.5]] + REST, Outcome.FAIL, "1 row(s) beyond it"),
    ([[0.1, 0.2]] + REST, Outcome.FAIL, "not shaped like the stable's"),
])
def test_the_golden_gate_for_tensor_outputs_compares_the_canary_with_the_stable(canary, outcome, words):
    j = judge_golden_outputs(canary, [[0.1, 0.2], [0.3, 0.4]] + REST, 0.001, "model e v2")
    assert j.outcome is outcome and words in j.reason, j.reason


@pytest.mark.parametrize("rows", [0, 1, 9])
def test_a_golden_set_under_the_minimum_is_no_evidence_never_a_pass(rows):
    """A golden set of 0 rows passed the gate: accuracy on nothing compared with accuracy on nothing."""
    from fleet.core.analysis import GOLDEN_MIN_ROWS, judge_golden
    for j in (judge_golden_outputs([[0.5]] * rows, [[0.5]] * rows, 0.001, "f.json"),
              judge_golden(1.0, 1.0, None, rows=rows, source="f.json")):
        assert j.outcome is Outcome.FAIL and f"has {rows} rows, fewer than the {GOLDEN_MIN_ROWS}" in j.reason
    assert judge_golden(1.0, 1.0, None, rows=GOLDEN_MIN_ROWS, source="f.json").outcome is Outcome.PASS


def test_a_golden_set_has_labels_or_outputs_with_a_tolerance():
    assert GoldenSet.of({"inputs": [[1]], "labels": [0]}, "f").labels == [0]
    tensor = GoldenSet.of({"inputs": [[1]], "outputs": [[0.5]]}, "shipped", {"tolerance": 0.01})
    assert tensor.labels is None and tensor.outputs == [[0.5]] and tensor.tolerance == 0.01
    for doc in ({"inputs": [[1]]}, {"inputs": [[1]], "outputs": [[0.5]]}):
        with pytest.raises(KeyError):
            GoldenSet.of(doc, "f")


NESTED = st.recursive(st.floats() | st.integers(min_value=-10 ** 40, max_value=10 ** 40) | st.booleans() | st.none()
                      | st.text(max_size=3), lambda inner: st.lists(inner, max_size=4), max_leaves=40)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)


@FUZZ
@given(rows=st.lists(NESTED, max_size=3))
def test_any_rows_for_an_image_shape_give_flat_rows_in_range_or_an_input_error(rows):
    try:
        out = validate_inputs({"inputs": rows}, IMAGE.input_shape, 8, (0.0, 1.0))
    except InputError as e:
        assert e.status in (413, 422) and "Traceback" not in str(e)
        return
    assert len(out) == len(rows) and all(len(r) == 4 and all(type(v) is float and 0 <= v <= 1 for v in r) for r in out)


@FUZZ
@given(shape=st.lists(st.integers(min_value=-2, max_value=5), max_size=5), data=NESTED,
       datatype=st.sampled_from(["FP32", "INT64", "BOOL", "BYTES", "FP8"]))
def test_any_inference_tensor_for_an_image_shape_gives_rows_or_a_400(shape, data, datatype):
    request = {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}
    try:
        (rows,), _, _ = parse_infer(request, IMAGE, 8)
    except InputError as e:
        assert e.status in (400, 413) and "Traceback" not in str(e)
        return
    assert shape[1:] == [1, 2, 2] and len(rows) == shape[0] and all(len(r) == 4 for r in rows)


@pytest.mark.parametrize("tag,parts", [("digits", ("digits", "latest")), ("digits:2", ("digits", "2")),
                                       ("localhost:5000/digits", ("localhost:5000/digits", "latest")),
                                       ("localhost:5000/digits:2", ("localhost:5000/digits", "2"))])
def test_an_image_name_splits_into_repository_and_tag(tag, parts):
    assert split(tag) == parts
