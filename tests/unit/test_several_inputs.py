"""A model of several input tensors (as a text model takes token ids and an attention mask): its manifest's
`inputs`, the rows of each on /predict ({"inputs": {name: rows}}) and on the Open Inference Protocol (one
tensor per input, in JSON or binary), its golden set, and the model fed each tensor in its datatype. Pure,
but for a small TorchScript module."""
import json

import numpy as np
import pytest
import torch

from fleet.adapters.gateway import GoldenSet
from fleet.errors import BadInput
from fleet.package import read_package
from fleet_inference import model_store
from fleet_inference.model_store import ArtifactError, Manifest
from fleet_inference.oip import model_metadata, parse_infer, split_body
from fleet_inference.validation import InputError, validate_named
from tests.kit.masked import DOC, MASK, TOKENS, Masked

M = Manifest.parse(DOC)


def test_a_manifest_declares_each_input_with_its_name_datatype_shape_and_range():
    assert [(i.name, i.dtype, i.shape, i.range) for i in M.inputs] == [
        ("tokens", "INT64", (4,), (0.0, 9.0)), ("mask", "FP32", (4,), None)]
    assert not M.single
    one = Manifest.parse({**{k: v for k, v in DOC.items() if k != "inputs"}, "input_shape": [8]})
    assert one.single and one.inputs[0].name == "input" and one.inputs[0].shape == (8,)


@pytest.mark.parametrize("inputs,message", [
    ([{"name": "a", "shape": [4]}, {"name": "a", "shape": [2]}], "each input needs a name of its own"),
    ([{"name": "a", "shape": [4]}, {"name": "b", "shape": [2], "datatype": "BF8"}], "inputs[1].datatype 'BF8' is unknown"),
    ([{"name": "a", "shape": []}], "inputs[0].shape [] must list one row's dimensions"),
    ([{"shape": [4]}], "inputs[0] must be an object with a name"),
    ([], "inputs must list the model's input tensors"),
])
def test_a_bad_inputs_entry_is_named(inputs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Manifest.parse({**DOC, "inputs": inputs})
    with pytest.raises(ValueError, match="both inputs and input_shape"):
        Manifest.parse({**DOC, "input_shape": [4]})


def test_a_package_needs_input_shape_or_inputs(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "m", "version": "1", "golden": {}}))
    with pytest.raises(BadInput, match=r"input_shape \(one input\) or inputs \(several\)"):
        read_package(tmp_path)


def test_predict_takes_each_inputs_rows_by_name():
    tokens, mask = validate_named({"inputs": {"mask": MASK, "tokens": TOKENS}}, M.inputs, 8)
    assert tokens == [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]] and mask == MASK


@pytest.mark.parametrize("payload,message", [
    ({"inputs": TOKENS}, "'inputs' must map each of the model's inputs to its rows: {\"tokens\": [...], \"mask\": [...]}"),
    ({"inputs": {"tokens": TOKENS}}, "the model's inputs are ['tokens', 'mask']; missing ['mask']"),
    ({"inputs": {"tokens": TOKENS, "mask": MASK, "x": MASK}}, "unknown ['x']"),
    ({"inputs": {"tokens": TOKENS, "mask": MASK[:1]}}, "different numbers of rows {'tokens': 2, 'mask': 1}"),
    ({"inputs": {"tokens": [[1, 2, 3, 10]] * 2, "mask": MASK}}, "inputs['tokens'][0][3] is 10, outside the model's input range"),
    ({"inputs": {"tokens": [[1, 2, 3, 2.5]] * 2, "mask": MASK}}, "inputs['tokens'][0][3] is 2.5, not a whole number"),
    ({"inputs": {"tokens": TOKENS, "mask": [[1.0] * 3] * 2}}, "inputs['mask'][0] has 3 values; the model takes 4"),
    ({"inputs": {"tokens": TOKENS * 5, "mask": MASK * 5}}, "inputs['tokens'] has 10 rows, over the limit of 8"),
])
def test_a_bad_predict_request_names_the_input(payload, message):
    with pytest.raises(InputError) as e:
        validate_named(payload, M.inputs, 8)
    assert message in str(e.value)


def tensor(name, data, datatype, rows=2):
    return {"name": name, "shape": [rows, 4], "datatype": datatype, "data": data}


def test_the_inference_protocol_takes_one_tensor_per_input_in_any_order():
    doc = {"inputs": [tensor("mask", MASK, "FP32"), tensor("tokens", sum(TOKENS, []), "INT32")]}
    (tokens, mask), outputs, _ = parse_infer(doc, M, 8)
    assert tokens.tolist() == TOKENS and mask.tolist() == MASK and outputs == ["probabilities", "label"]
    assert model_metadata(M)["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": [-1, 4]},
                                           {"name": "mask", "datatype": "FP32", "shape": [-1, 4]}]


def test_binary_data_of_several_tensors_is_split_by_their_sizes():
    """Triton's client sends every tensor binary, one after another, each with its binary_data_size; one
    tensor may stay JSON."""
    raw_tokens, raw_mask = np.array(TOKENS, "<i8").tobytes(), np.array(MASK, "<f4").tobytes()
    doc = {"inputs": [{**tensor("tokens", None, "INT64"), "parameters": {"binary_data_size": len(raw_tokens)}},
                      {**tensor("mask", None, "FP32"), "parameters": {"binary_data_size": len(raw_mask)}}]}
    for t in doc["inputs"]:
        t.pop("data")
    head = json.dumps(doc).encode()
    payload, binary = split_body(head + raw_tokens + raw_mask, str(len(head)))
    (tokens, mask), _, _ = parse_infer(payload, M, 8, binary)
    assert tokens.tolist() == TOKENS and mask.tolist() == MASK
    with pytest.raises(InputError, match="'mask' declares binary_data_size 32, but 31 bytes follow"):
        parse_infer(payload, M, 8, binary[:-1])
    mixed = {"inputs": [doc["inputs"][0], tensor("mask", MASK, "FP32")]}
    (tokens, mask), _, _ = parse_infer(mixed, M, 8, raw_tokens)
    assert tokens.tolist() == TOKENS and mask.tolist() == MASK
    with pytest.raises(InputError, match="72 bytes follow the JSON but the inputs. binary_data_size add up to 64"):
        parse_infer(mixed, M, 8, raw_tokens + b"\0" * 8)


@pytest.mark.parametrize("inputs,message", [
    ([tensor("tokens", sum(TOKENS, []), "INT64")], "the model takes 2 input tensors, ['tokens', 'mask']; the request has 1"),
    ([tensor("tokens", sum(TOKENS, []), "INT64")] * 2, "input 'tokens' is unknown or sent twice"),
    ([tensor("tokens", sum(TOKENS, []), "INT64"), tensor("mask", MASK[0], "FP32", 1)],
     "different numbers of rows {'tokens': 2, 'mask': 1}"),
    ([tensor("tokens", [1, 2, 3, 10] * 2, "INT64"), tensor("mask", MASK, "FP32")],
     "input 'tokens' value 3 is 10, outside the model's input range"),
])
def test_a_bad_inference_request_names_the_input(inputs, message):
    with pytest.raises(InputError) as e:
        parse_infer({"inputs": inputs}, M, 8)
    assert e.value.status == 400 and message in str(e.value)


def test_the_model_is_fed_each_tensor_in_its_datatype_and_its_golden_set_read_by_name(tmp_path):
    torch.jit.script(Masked()).save(str(tmp_path / "model.pt"))
    golden = {"inputs": {"tokens": TOKENS, "mask": MASK}, "labels": [0, 0]}  # 1+2 = 3 -> 0; 5+6+7 = 18 -> 0
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    manifest = {**DOC, "sha256": model_store.sha256_of(tmp_path / "model.pt"),
                "golden": {"file": "golden.json", "size": 2, "accuracy": 1.0}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    module, m = model_store.load_artifact(str(tmp_path), torch.device("cpu"))
    model_store.warm_up(module, m, torch.device("cpu"), tmp_path)  # zeros of each dtype, then the golden set
    (tokens, mask), labels = model_store.read_golden(tmp_path, m)
    assert tokens.dtype == torch.int64 and mask.dtype == torch.float32 and labels == [0, 0]
    assert model_store.answer(module, m, (tokens, mask)).argmax(dim=1).tolist() == labels

    (tmp_path / "golden.json").write_text(json.dumps({**golden, "inputs": {"tokens": TOKENS}}))
    with pytest.raises(ArtifactError, match=r'it needs \{"inputs": \{"tokens": \[...\], "mask": \[...\]\}'):
        model_store.read_golden(tmp_path, m)
    (tmp_path / "golden.json").write_text(json.dumps({**golden, "inputs": {"tokens": TOKENS, "mask": [[1.0] * 3] * 2}}))
    with pytest.raises(ArtifactError, match=r"inputs 'mask' of shape \[2, 3\].*inputs 'mask' \[4\] needs \[N, 4\]"):
        model_store.read_golden(tmp_path, m)
    with pytest.raises(ArtifactError, match=r"rejects inputs of shape and datatype tokens \[2, 4\] INT64, mask \[2, 3\]"):
        model_store.answer(module, m, (tokens, torch.ones(2, 3)))


def test_fleets_golden_gate_sends_a_golden_set_of_several_inputs_in_chunks_by_name():
    g = GoldenSet({"tokens": TOKENS * 3, "mask": MASK * 3}, [0] * 6, "test")
    assert g.size == 6 and g.rows(4, 10) == {"tokens": TOKENS, "mask": MASK}
    assert GoldenSet(TOKENS, [0, 0], "test").rows(1, 2) == TOKENS[1:]
