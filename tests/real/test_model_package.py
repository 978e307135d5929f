"""Your own model, as a user brings it: a model package the test makes itself (a small CNN over
scikit-learn's handwritten digits, NCHW [N, 1, 8, 8], tests/kit/digits.py), built with `fleet build`,
deployed, answering through the gateway on /predict and the Open Inference Protocol with the outputs the
same model gives locally, then rolled out to its second version. A model of plain tensor outputs (not
classes), whose canary the golden gate judges against the stable's outputs within the manifest's
tolerance. And bad packages: `fleet build` exits 2 naming the field, no image made. Clients go through
the gateway at 127.0.0.1, bounded."""
import json
import subprocess
import sys

import docker
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from fleet.adapters.gateway import Gateway
from tests.kit.cli import fleet
from tests.kit.digits import write_masked_package, write_package, write_tensor_package, write_token_package
from tests.kit.helpers import HTTP, LoadLoop, wait_until
from tests.kit.stacks import ROOT, canary_gone, converged, own_stack, stable_image

NAME = "fleettest-byom"
IMAGE = "fleet/digits-test"  # the images this module builds, labelled fleet.model=digits-cnn / digits-bad
MODELS = ("digits-cnn", "digits-bad", "digits-embedding", "digits-tokens", "digits-masked")


def build(package, tag: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet.cli", "build", str(package), "--tag", tag, "--json", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def remove_images(client: docker.DockerClient) -> None:
    """This module's tags (IMAGE:*) of the models' images; the same build tagged by another module running at
    the same time (the cluster's REGISTRY/fleet/digits-test:pushed) keeps its own tag."""
    for model in MODELS:
        for image in client.images.list(filters={"label": f"fleet.model={model}"}):
            for tag in image.tags:
                if tag.startswith(f"{IMAGE}:"):
                    client.images.remove(tag)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return {v: write_package(root / f"v{v}", v) for v in ("1", "2")}


@pytest.fixture(scope="module")
def byom(swarm, packages):
    remove_images(swarm.client)
    with own_stack(swarm, NAME, 29600, 29180) as s:
        yield s
    remove_images(swarm.client)


def test_a_users_image_classifier_is_built_deployed_served_on_both_apis_and_rolled_out(byom, packages):
    # built with the documented command, twice from the same package: the same layers
    built = {}
    for v, tag in (("1", f"{IMAGE}:1"), ("2", f"{IMAGE}:2"), ("2", f"{IMAGE}:2-again")):
        p = build(packages[v], tag)
        assert p.returncode == 0, p.stderr
        built[tag] = json.loads(p.stdout)
    assert built[f"{IMAGE}:2"]["layers"] == built[f"{IMAGE}:2-again"]["layers"], "same package, same layers"
    assert built[f"{IMAGE}:1"]["layers"][:-1] == built[f"{IMAGE}:2"]["layers"][:-1], "versions share all but the model"
    manifest = json.loads((packages["1"] / "manifest.json").read_text())
    assert built[f"{IMAGE}:1"]["check"]["golden_accuracy"] == manifest["golden"]["accuracy"]
    assert built[f"{IMAGE}:1"]["labels"]["fleet.model-version"] == "1"

    p = fleet(byom, "deploy", "--stack", NAME, env={"FLEET_IMAGE": f"{IMAGE}:1"}, timeout=400)
    assert p.returncode == 0, p.stderr
    wait_until(lambda: converged(byom, version="1"), 120, "the digits model's replicas to pass in Consul")

    golden = json.loads((packages["1"] / "golden.json").read_text())
    rows = golden["inputs"][:16]
    local = torch.jit.load(str(packages["1"] / "model.pt"))(torch.tensor(rows)).detach().numpy()
    r = HTTP.post(f"{byom.gateway}/predict", json={"inputs": rows}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "1" and r.json()["classes"] == local.argmax(axis=1).tolist()
    assert r.json()["labels"] == [str(c) for c in local.argmax(axis=1).tolist()]  # the manifest's names
    np.testing.assert_allclose(np.array(r.json()["probabilities"]), local, rtol=1e-5, atol=1e-6)

    client = triton.InferenceServerClient(f"127.0.0.1:{byom.gateway_port}")
    assert client.is_server_live() and client.is_model_ready("digits-cnn")
    meta = client.get_model_metadata("digits-cnn")
    assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["outputs"][0]["shape"] == [-1, 10], meta
    x = triton.InferInput("input", [16, 1, 8, 8], "FP32")
    x.set_data_from_numpy(np.array(rows, dtype=np.float32))
    answer = client.infer("digits-cnn", [x])
    np.testing.assert_allclose(answer.as_numpy("probabilities"), local, rtol=1e-5, atol=1e-6)
    assert answer.as_numpy("label").tolist() == local.argmax(axis=1).tolist()

    # bad requests name the shape the manifest declares, on both APIs
    flat = [[v for channel in row for line in channel for v in line] for row in rows[:2]]
    r = HTTP.post(f"{byom.gateway}/predict", json={"inputs": flat}, timeout=10)
    assert r.status_code == 422 and "[1, 8, 8]" in r.json()["error"], r.text
    r = HTTP.post(f"{byom.gateway}/v2/models/digits-cnn/infer", timeout=10, json={
        "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": flat}]})
    assert r.status_code == 400 and "[N, 1, 8, 8]" in r.json()["error"], r.text

    # its second version, rolled out as a canary under users' traffic and promoted; the users send digits
    # both versions classify alike (on others the better v2 answers another class mix, and fleet's mix
    # check would rightly hold it back)
    v2 = torch.jit.load(str(packages["2"] / "model.pt"))
    with torch.no_grad():
        x = torch.tensor(golden["inputs"])
        alike = (v2(x).argmax(dim=1) == torch.jit.load(str(packages["1"] / "model.pt"))(x).argmax(dim=1)).nonzero()
    traffic = [golden["inputs"][int(i)] for i in alike[:8, 0]]
    with LoadLoop(f"{byom.gateway}/predict", max_requests=20_000, max_seconds=300, inputs=traffic) as load:
        p = fleet(byom, "rollout", "--canary", "--image", f"{IMAGE}:2", "--stack", NAME, "--json", "--steps", "50",
                  "--step-duration", "10s", timeout=400)
        doc = json.loads(p.stdout) if p.stdout.strip() else {}
    assert p.returncode == 0 and doc["outcome"] == "promoted", (doc, p.stderr[-2000:])
    assert "canary accuracy 0.9" in json.dumps(doc["timeline"]), doc["timeline"]
    print(f"\ndigits v1 -> v2: {load.total} client requests, {len(load.failures)} failed")
    assert load.total > 20 and load.failures == [], load.failures[:5]
    assert stable_image(byom) == f"{IMAGE}:2" and canary_gone(byom)
    wait_until(lambda: converged(byom, version="2"), 60, "the stable at version 2 in Consul")


def test_a_torch_export_program_of_integer_inputs_is_fed_its_datatype_on_both_apis(byom, run_replica, tmp_path):
    """A manifest's input_dtype INT64 (a model that embeds its inputs, as a text model its token ids, and
    rejects floats), its weights a torch.export program (model.pt2): the image's dry run and the replica
    load the program and feed it integers; both APIs say and check the datatype."""
    package = write_token_package(tmp_path / "tokens", export=True)
    p = build(package, f"{IMAGE}:tokens")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["check"]["input_dtype"] == "INT64"
    replica = run_replica(f"{IMAGE}:tokens")
    wait_until(lambda: HTTP.get(f"{replica.url}/ready", timeout=2).status_code == 200, 90, "the replica ready")

    rows = json.loads((package / "golden.json").read_text())["inputs"][:16]
    with torch.no_grad():
        local = torch.export.load(str(package / "model.pt2")).module()(torch.tensor(rows)).numpy()
    r = HTTP.post(f"{replica.url}/predict", json={"inputs": rows}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["classes"] == local.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array(r.json()["probabilities"]), local, rtol=1e-5, atol=1e-6)

    client = triton.InferenceServerClient(replica.url.removeprefix("http://"))
    assert client.get_model_metadata("digits-tokens")["inputs"] == [
        {"name": "input", "datatype": "INT64", "shape": [-1, 64]}]
    x = triton.InferInput("input", [16, 64], "INT64")
    x.set_data_from_numpy(np.array(rows, dtype=np.int64))  # binary, as Triton's client sends it
    np.testing.assert_allclose(client.infer("digits-tokens", [x]).as_numpy("probabilities"), local, rtol=1e-5,
                               atol=1e-6)

    # a value the datatype cannot hold is the client's error, named, on both APIs; the replica stays ready
    half = [rows[0][:-1] + [2.5]]
    r = HTTP.post(f"{replica.url}/predict", json={"inputs": half}, timeout=10)
    assert r.status_code == 422 and "inputs[0][63] is 2.5, not a whole number: the model takes INT64" in r.text, r.text
    r = HTTP.post(f"{replica.url}/v2/models/digits-tokens/infer", timeout=10, json={
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": half[0]}]})
    assert r.status_code == 400 and "value 63 is 2.5, not a whole number" in r.text, r.text
    assert HTTP.get(f"{replica.url}/ready", timeout=2).status_code == 200


def test_a_model_of_two_inputs_is_fed_both_by_name_on_both_apis_and_judged_on_its_golden_set(byom, run_replica,
                                                                                           tmp_path):
    """A manifest of several `inputs` (an image, FP32, and a mask of the pixels to look at, UINT8), as a text
    model takes token ids and an attention mask: built, its golden set of both inputs checked in the image;
    /predict takes each input's rows by name, Triton's client sends both tensors binary in one request, and
    fleet's golden gate sends the golden set of both through /predict."""
    package = write_masked_package(tmp_path / "masked")
    p = build(package, f"{IMAGE}:masked")
    assert p.returncode == 0, p.stderr
    assert [i["name"] for i in json.loads(p.stdout)["check"]["inputs"]] == ["image", "mask"]
    replica = run_replica(f"{IMAGE}:masked")
    wait_until(lambda: HTTP.get(f"{replica.url}/ready", timeout=2).status_code == 200, 90, "the replica ready")

    golden = json.loads((package / "golden.json").read_text())["inputs"]
    image = golden["image"][:16]
    mask = np.ones((16, 1, 8, 8), dtype=np.uint8)
    mask[:, :, :, 4:] = 0  # the right half hidden: another answer than the whole image's, for some digits
    model = torch.jit.load(str(package / "model.pt"))
    with torch.no_grad():
        local = model(torch.tensor(image), torch.tensor(mask)).numpy()
        whole = model(torch.tensor(image), torch.ones(16, 1, 8, 8, dtype=torch.uint8)).numpy()
    assert (local.argmax(axis=1) != whole.argmax(axis=1)).any()  # the mask is really applied
    r = HTTP.post(f"{replica.url}/predict", json={"inputs": {"mask": mask.tolist(), "image": image}}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["classes"] == local.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array(r.json()["probabilities"]), local, rtol=1e-5, atol=1e-6)

    client = triton.InferenceServerClient(replica.url.removeprefix("http://"))
    assert client.get_model_metadata("digits-masked")["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]},
        {"name": "mask", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    x, m = triton.InferInput("image", [16, 1, 8, 8], "FP32"), triton.InferInput("mask", [16, 1, 8, 8], "UINT8")
    x.set_data_from_numpy(np.array(image, dtype=np.float32))  # both binary, one after the other
    m.set_data_from_numpy(mask)
    np.testing.assert_allclose(client.infer("digits-masked", [m, x]).as_numpy("probabilities"), local, rtol=1e-5,
                               atol=1e-6)

    # a missing input, or a mask value the manifest's range refuses, is the client's error, named
    r = HTTP.post(f"{replica.url}/predict", json={"inputs": {"image": image}}, timeout=10)
    assert r.status_code == 422 and "missing ['mask']" in r.text, r.text
    r = HTTP.post(f"{replica.url}/predict", json={"inputs": {"image": image[:1], "mask": [[[[2] * 8] * 8]]}},
                   timeout=10)
    assert r.status_code == 422 and "inputs['mask'][0][0][0][0] is 2, outside the model's input range" in r.text

    # fleet's golden gate: the shipped golden set of both inputs, through /predict in chunks
    gateway = Gateway(replica.url)
    try:
        g = gateway.golden_set()
        assert g.size == 200 and gateway.accuracy("canary", g) == json.loads(
            (package / "manifest.json").read_text())["golden"]["accuracy"]
    finally:
        gateway.close()
    assert HTTP.get(f"{replica.url}/ready", timeout=2).status_code == 200


def break_shape(m, g):
    m["input_shape"] = [1, 7, 7]


def drop_labels(m, g):
    del g["labels"]


def unknown_dtype(m, g):
    m["input_dtype"] = "FP8"


@pytest.mark.parametrize("spoil,words", [
    (break_shape, "input_shape [1, 7, 7]"),  # the weights reject it: found by the dry run in the image
    (drop_labels, '"labels"'),
    (unknown_dtype, "input_dtype 'FP8' is unknown"),
], ids=["shape-the-weights-reject", "golden-labels-missing", "unknown-dtype"])
def test_a_bad_package_is_refused_naming_the_field_and_no_image_is_made(byom, packages, tmp_path, spoil, words):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in packages["1"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    manifest, golden = json.loads((bad / "manifest.json").read_text()), json.loads((bad / "golden.json").read_text())
    manifest["name"] = "digits-bad"
    spoil(manifest, golden)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (bad / "golden.json").write_text(json.dumps(golden))
    p = build(bad, f"{IMAGE}:bad")
    assert p.returncode == 2, (p.stdout, p.stderr)
    doc = json.loads(p.stdout)
    assert words in doc["error"] and str(bad) in doc["error"], doc["error"]
    client = byom.swarm.client
    assert client.images.list(filters={"label": "fleet.model=digits-bad"}) == []
    assert client.containers.list(all=True, filters={"label": "fleet.build-check"}) == []


def test_a_tensor_model_is_served_and_a_canary_whose_outputs_moved_past_the_tolerance_is_rolled_back(byom,
                                                                                                  tmp_path):
    same = write_tensor_package(tmp_path / "v1", "1")
    moved = write_tensor_package(tmp_path / "v2", "2", scale=0.5)  # answers other numbers for the same digits
    for package, tag in ((same, "embed-1"), (moved, "embed-2")):
        p = build(package, f"{IMAGE}:{tag}")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["check"]["golden_max_difference"] == 0.0
    p = fleet(byom, "deploy", "--stack", NAME, "--replace-promoted", env={"FLEET_IMAGE": f"{IMAGE}:embed-1"},
              timeout=400)
    assert p.returncode == 0, p.stderr
    golden = json.loads((same / "golden.json").read_text())
    r = HTTP.post(f"{byom.gateway}/predict", json={"inputs": golden["inputs"][:4]}, timeout=10)
    assert r.status_code == 200 and "classes" not in r.json(), r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"]), np.array(golden["outputs"][:4]), atol=1e-6)
    r = HTTP.post(f"{byom.gateway}/v2/models/digits-embedding/infer", timeout=10, json={
        "inputs": [{"name": "input", "shape": [4, 1, 8, 8], "datatype": "FP32", "data": golden["inputs"][:4]}]})
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["output"], r.text
    assert r.json()["outputs"][0]["shape"] == [4, 2]

    with LoadLoop(f"{byom.gateway}/predict", max_requests=20_000, max_seconds=200, inputs=golden["inputs"][:4]) as load:
        p = fleet(byom, "rollout", "--canary", "--image", f"{IMAGE}:embed-2", "--stack", NAME, "--json",
                  "--steps", "50", "--step-duration", "10s", timeout=400)
    doc = json.loads(p.stdout) if p.stdout.strip() else {}
    assert p.returncode == 1 and doc["outcome"] == "rolled_back", (doc, p.stderr[-2000:])
    assert "golden gate failed" in doc["reason"] and "tolerance 0.001" in doc["reason"], doc["reason"]
    assert "row(s) beyond it" in doc["reason"], doc["reason"]
    assert not [e for e in doc["timeline"] if e["event"] == "share"], "the canary must never get a share"
    assert load.total > 10 and load.failures == [], load.failures[:5]
    assert [v for _, _, v in load.served if v != "1"] == [], "every answer from the stable"
    assert stable_image(byom) == f"{IMAGE}:embed-1" and canary_gone(byom)
