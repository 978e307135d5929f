"""Talking to replicas themselves: their /metrics and the golden-input check on a canary.

fleet runs on a Swarm manager; replicas live on the stack's overlay network, which the host cannot
route to. Each of their containers also has an address on the node's docker_gwbridge, which the host
does reach: that is the address used here (containers on other nodes are out of reach, so their
evidence is missing, which never counts as success).
"""
import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..analysis import Stats

GOLDEN_TOLERANCE = 0.01  # accuracy points the golden check allows below the manifest's figure
CHUNK = 64  # rows per /predict request (the service's FLEET_MAX_ROWS default)


def gwbridge_addresses(client) -> dict[str, str]:
    """container ID -> its IPv4 address on docker_gwbridge."""
    try:
        containers = client.networks.get("docker_gwbridge").attrs.get("Containers") or {}
    except Exception:
        return {}
    return {cid: c["IPv4Address"].split("/")[0] for cid, c in containers.items() if c.get("IPv4Address")}


def parse_stats(text: str, route: str = "/predict") -> Stats:
    """Pure: the route's request count, 5xx count and latency sum from a Prometheus exposition."""
    requests = errors = 0
    latency = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("route") != route:
                continue
            if s.name == "fleet_requests_total":
                requests += int(s.value)
                errors += int(s.value) if s.labels.get("status", "").startswith("5") else 0
            elif s.name == "fleet_request_seconds_sum":
                latency += s.value
    return Stats(requests, errors, latency)


def scrape(http: httpx.Client, address: str, port: int = 8000) -> Stats | None:
    try:
        r = http.get(f"http://{address}:{port}/metrics", timeout=1.0)
        return parse_stats(r.text) if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def golden_check(address: str, port: int = 8000, timeout: float = 10.0) -> tuple[bool, str]:
    """Send the replica's golden set to its /predict; pass when the accuracy meets its manifest's."""
    base = f"http://{address}:{port}"
    try:
        with httpx.Client(timeout=timeout) as http:
            info = http.get(f"{base}/info").json()
            expected = (info.get("golden") or {}).get("accuracy")
            if expected is None:
                return False, f"the model {info.get('model')} v{info.get('version')} ships no golden set"
            golden = http.get(f"{base}/golden").raise_for_status().json()
            inputs, labels = golden["inputs"], golden["labels"]
            right = 0
            for i in range(0, len(inputs), CHUNK):
                r = http.post(f"{base}/predict", json={"inputs": inputs[i:i + CHUNK]})
                if r.status_code != 200:
                    return False, f"/predict answered {r.status_code} on golden rows {i}..{i + CHUNK - 1}: {r.text[:200]}"
                right += sum(int(c == y) for c, y in zip(r.json()["classes"], labels[i:i + CHUNK]))
    except (httpx.HTTPError, ValueError, KeyError) as e:
        return False, f"cannot run the golden check against {base}: {e!r}"
    accuracy = right / len(labels)
    verdict = f"accuracy {accuracy:.4f} on {len(labels)} golden rows, manifest says {expected:.4f}"
    return accuracy >= expected - GOLDEN_TOLERANCE, verdict
