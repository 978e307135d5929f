"""Property-based fuzzing (Hypothesis) of a real replica process's /predict and Open Inference Protocol
inference route, run locally on 127.0.0.1:
arbitrary JSON, rows of arbitrary numbers, arbitrary bytes under odd content types. Never a 5xx, never
a Python repr or traceback in an answer, the replica stays ready, and its memory stays bounded.
Bounded in examples (derandomized, so a run is reproducible) and every request in time."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from contextlib import contextmanager

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from fleet_inference.model_store import sha256_of
from tests.kit.helpers import wait_until
from tests.kit.masked import DOC, MASK, TOKENS, Masked
from tests.kit.stacks import ROOT

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
LEAKS = ("Traceback", "Error(", "Exception(", 'File "')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def serving(model_path: Path):
    """A replica process serving the package at `model_path` on 127.0.0.1, ready: a client to it."""
    port, admin = free_port(), free_port()
    env = {**os.environ, "MODEL_PATH": str(model_path), "FLEET_PORT": str(port),
           "FLEET_ADMIN_PORT": str(admin), "PYTHONPATH": f"{ROOT / 'services/inference'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-m", "fleet_inference"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200, 60,
                   "the replica to be ready", interval=0.2)
        with httpx.Client(base_url=url, timeout=10) as client:
            client.rss_before = rss_bytes(proc.pid)
            client.pid = proc.pid
            yield client
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def replica():
    with serving(ROOT / "build/models/v2") as client:
        yield client


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """A replica of a model of two inputs (tokens INT64 [4] in 0..9, mask FP32 [4]: tests/unit's Masked)."""
    path = tmp_path_factory.mktemp("masked")
    torch.jit.script(Masked()).save(str(path / "model.pt"))
    (path / "golden.json").write_text(json.dumps({"inputs": {"tokens": TOKENS, "mask": MASK}, "labels": [0, 0]}))
    (path / "manifest.json").write_text(json.dumps({**DOC, "sha256": sha256_of(path / "model.pt"),
                                                    "golden": {"file": "golden.json", "size": 2, "accuracy": 1.0}}))
    with serving(path) as client:
        yield client


def answered_safely(r: httpx.Response, allowed: set[int]) -> None:
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    text = r.text
    assert not any(leak in text for leak in LEAKS), text[:300]
    if r.status_code != 200:
        assert json.loads(text)["error"]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=60)


@FUZZ
@given(payload=json_values)
def test_arbitrary_json_gets_an_answer_or_a_4xx(replica, payload):
    for body in (payload, {"inputs": payload}):
        answered_safely(replica.post("/predict", content=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}), {200, 400, 413, 422})


@FUZZ
@given(rows=st.lists(st.lists(st.floats() | st.integers(min_value=-10 ** 400, max_value=10 ** 400), min_size=8,
                              max_size=8), min_size=1, max_size=70))
def test_rows_of_arbitrary_numbers_get_an_answer_or_a_422(replica, rows):
    body = json.dumps({"inputs": rows}).encode()  # NaN and Infinity as JSON's extensions, huge integers whole
    answered_safely(replica.post("/predict", content=body, headers={"content-type": "application/json"}),
                    {200, 413, 422})


@FUZZ
@given(body=st.binary(max_size=2000), content_type=st.sampled_from(
    ["application/json", "", "text/plain", "application/octet-stream", "application/json; charset=latin-1"]),
    depth=st.integers(min_value=0, max_value=40_000))
def test_arbitrary_bytes_and_deep_nesting_never_a_5xx(replica, body, content_type, depth):
    headers = {"content-type": content_type} if content_type else {}
    answered_safely(replica.post("/predict", content=body, headers=headers), {400, 413, 415, 422})
    nested = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    answered_safely(replica.post("/predict", content=nested, headers={"content-type": "application/json"}),
                    {400, 413, 422})


INFER = "/v2/models/breast-cancer-mlp/infer"  # the Open Inference Protocol's route (fleet_inference/oip.py)


@FUZZ
@given(payload=json_values, tensor=st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "x"]), "datatype": st.sampled_from(["FP32", "INT8", "BYTES", "BOOL"]),
     "shape": st.lists(st.integers(min_value=-2, max_value=70), max_size=3)}, optional={"data": json_values}))
def test_arbitrary_inference_requests_get_an_answer_or_a_4xx(replica, payload, tensor):
    for body in (payload, {"inputs": payload}, {"inputs": [tensor]}, {"inputs": [{**tensor, "data": payload}]}):
        answered_safely(replica.post(INFER, content=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}), {200, 400, 413, 422})


@FUZZ
@given(rows=st.lists(st.lists(st.floats() | st.integers(min_value=-10 ** 400, max_value=10 ** 400), min_size=8,
                              max_size=8), min_size=1, max_size=70))
def test_inference_tensors_of_arbitrary_numbers_get_an_answer_or_a_4xx(replica, rows):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 8], "data": rows}]}
    answered_safely(replica.post(INFER, content=json.dumps(body).encode(), headers={"content-type": "application/json"}),
                    {200, 400, 413, 422})


MASKED = "/v2/models/masked/infer"
NAMES = st.sampled_from(["tokens", "mask", "x"])


@FUZZ
@given(payload=json_values, named=st.dictionaries(NAMES, json_values, max_size=3))
def test_a_model_of_two_inputs_answers_arbitrary_predict_bodies_or_a_4xx(two_inputs, payload, named):
    for body in (payload, {"inputs": payload}, {"inputs": named}):
        answered_safely(two_inputs.post("/predict", content=json.dumps(body).encode(),
                                        headers={"content-type": "application/json"}), {200, 400, 413, 422})


tensors = st.lists(st.fixed_dictionaries(
    {"name": NAMES, "datatype": st.sampled_from(["FP32", "INT64", "UINT8", "BYTES"]),
     "shape": st.lists(st.integers(min_value=-2, max_value=70), max_size=3)},
    optional={"data": json_values, "parameters": st.fixed_dictionaries(
        {"binary_data_size": st.integers(min_value=-4, max_value=600) | st.none() | st.text(max_size=3)})}),
    max_size=3)


@FUZZ
@given(inputs=tensors, binary=st.binary(max_size=600))
def test_a_model_of_two_inputs_answers_arbitrary_tensors_and_binary_data_or_a_4xx(two_inputs, inputs, binary):
    """Several tensors, each JSON or binary, with sizes that may not add up to the bytes after the JSON."""
    head = json.dumps({"inputs": inputs}).encode()
    answered_safely(two_inputs.post(MASKED, content=head + binary, headers={
        "content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}),
        {200, 400, 413, 422})
    assert two_inputs.get("/ready").status_code == 200


def test_after_the_fuzz_the_replica_is_ready_and_its_memory_bounded(replica):
    worst = b'{"inputs": ' + b"[" * 60_000 + b"]" * 60_000 + b"}"
    for _ in range(300):
        answered_safely(replica.post("/predict", content=worst, headers={"content-type": "application/json"}), {400})
    assert replica.post("/predict", json={"inputs": [[0.0] * 8]}).status_code == 200
    assert replica.get("/ready").status_code == 200
    growth = rss_bytes(replica.pid) - replica.rss_before
    assert growth < 50 << 20, f"memory grew {growth >> 20} MiB over the fuzz"


# headers and raw bytes: what no HTTP client library would send ----------------------------------
def raw_request(url: str, head: bytes, body: bytes = b"", cut: bool = False) -> tuple[int | None, bytes]:
    """Send `head` (request line and headers, without `Connection: close` and the blank line) and `body` as they
    are, over a plain socket to the replica at `url`; the answer's status and bytes. `cut`: close the socket
    right after sending (a client gone before its declared body is whole): (None, b""). Bounded: 10 s."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        if cut:
            return None, b""
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    line = got.split(b"\r\n", 1)[0].split()
    return (int(line[1]) if len(line) > 1 and line[1].isdigit() else None), got


def status_counts(client: httpx.Client) -> dict[str, float]:
    """fleet_requests_total by status, summed over routes, from the replica's /metrics."""
    counts = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("fleet_requests_total{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def answered_4xx_or_200(status: int | None, got: bytes) -> None:
    assert status is not None and (status == 200 or 400 <= status < 500), got[:300]
    assert not any(leak.encode() in got for leak in LEAKS), got[:300]


# the header values a client may send anything in: every byte but CR and LF (those end the header)
header_values = st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)
HEADERS = [b"Inference-Header-Content-Length", b"Content-Type", b"Content-Encoding", b"Accept", b"Expect",
           b"Transfer-Encoding", b"X-Request-Id", b"Accept-Encoding"]


@pytest.mark.parametrize("value", [b"\xb2", b"1\xb2", b"\xb9\xb3", "\u0663".encode(), "\uff11".encode(), b"-5",
                                   b"99999999999999999999999", b"0x10"])
def test_the_binary_header_spelled_with_any_digits_is_a_400(replica, value):
    """The byte 0xb2 reads as '²' (headers are Latin-1), which passes str.isdigit() and fails int(): every
    replica answered 500, and the gateway retried it on four servers, counted against a canary."""
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]})
    head = (f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + b"Inference-Header-Content-Length: " + value
    status, got = raw_request(str(replica.base_url), head, body.encode())
    assert status == 400 and b"Inference-Header-Content-Length" in got, got[:300]


@FUZZ
@given(name=st.sampled_from(HEADERS), value=header_values, length=header_values.filter(lambda b: not b.isdigit()),
       path=st.sampled_from(["/predict", INFER]))
def test_arbitrary_header_bytes_never_get_a_5xx(replica, name, value, length, path):
    """Any bytes in a header's value, and any Content-Length that is no length (lengths: the test below)."""
    body = json.dumps({"inputs": [[1.0] * 8]}).encode()
    for head in (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n".encode()
                 + name + b": " + value,
                 f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
                 + b"Content-Length: " + length):
        answered_4xx_or_200(*raw_request(str(replica.base_url), head, body))
    assert replica.get("/ready").status_code == 200


def test_a_client_gone_before_its_declared_body_is_whole_counts_no_5xx(replica):
    """Starlette raises ClientDisconnect from the body's stream, which the replica answered (and counted) as a
    500: any client could add server errors to a canary's count at will."""
    body = json.dumps({"inputs": [[1.0] * 8]}).encode()
    before = status_counts(replica)
    for path in ("/predict", INFER):
        for _ in range(3):
            raw_request(str(replica.base_url), f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        f"application/json\r\nContent-Length: 99999".encode(), body, cut=True)
    wait_until(lambda: sum(status_counts(replica).values()) - sum(before.values()) >= 6, 10,
               "the replica to count the 6 requests cut short", interval=0.1)
    after = status_counts(replica)
    assert after.get("499", 0) - before.get("499", 0) == 6, after
    assert all(after.get(s, 0) == before.get(s, 0) for s in after if s.startswith("5")), (before, after)
