"""Reading PromQL from Prometheus's HTTP API, and a role's /predict window from it.

A query returns its samples, or none ("no data"); a provider that does not answer raises
ProviderError, which is missing evidence (counted apart from metric failures, like Argo Rollouts'
consecutiveErrorLimit), never a verdict on the canary.
"""
import functools
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..core.analysis import GATEWAY_SCRAPED, PREDICTIONS, SCRAPED, Stats
from .endpoints import Endpoints, Unanswered, fixed
from .within import request_within

log = logging.getLogger("fleet.prometheus")


class ProviderError(Exception):
    """Prometheus did not answer, or answered with an error."""


@dataclass(frozen=True)
class Sample:
    labels: dict
    value: float


def credentials() -> httpx.BasicAuth | None:
    """fleet's credentials for the stack's Prometheus (scripts/prometheus-secrets.sh): the user
    FLEET_PROMETHEUS_USER (default fleet) and the password in FLEET_PROMETHEUS_PASSWORD_FILE, or in
    FLEET_PROMETHEUS_PASSWORD; None when neither is set (or the file cannot be read: a warning)."""
    path, password = os.environ.get("FLEET_PROMETHEUS_PASSWORD_FILE"), os.environ.get("FLEET_PROMETHEUS_PASSWORD")
    if path:
        try:
            password = Path(path).read_text().strip()
        except OSError as e:  # said, and then Prometheus's refusal says the rest (REFUSED)
            log.warning("FLEET_PROMETHEUS_PASSWORD_FILE %s: %s; point it at the password "
                        "scripts/prometheus-secrets.sh made (build/prometheus-auth/password)", path, e.strerror)
            return None
    if not password:
        return None
    return httpx.BasicAuth(os.environ.get("FLEET_PROMETHEUS_USER") or "fleet", password)


def tls() -> ssl.SSLContext | bool:
    """How fleet checks the TLS certificate of Prometheus: against the CA in FLEET_PROMETHEUS_CACERT (the stack's
    own, which scripts/prometheus-secrets.sh made to sign Prometheus's certificate alone and then threw its
    key away: that CA is the certificate's pin, so the host name fleet reached it by, a node's address that
    Swarm gives, is not checked), else the system's CAs (an operator's Prometheus, given with --prometheus)."""
    path = os.environ.get("FLEET_PROMETHEUS_CACERT")
    if not path:
        return True
    try:
        return _pinned(path)
    except (OSError, ssl.SSLError) as e:  # said, and then the handshake's failure says the rest (UNTRUSTED)
        log.warning("FLEET_PROMETHEUS_CACERT %s: %s; point it at the CA scripts/prometheus-secrets.sh made "
                    "(build/prometheus-auth/ca.pem)", path, getattr(e, "strerror", None) or e)
        return True


@functools.cache
def _pinned(path: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=path)
    context.check_hostname = False
    return context


UNTRUSTED = ("Prometheus at {url} has a certificate fleet does not trust ({error}): set FLEET_PROMETHEUS_CACERT to "
             "the CA that signed it (`. build/prometheus-auth/fleet.env` sets it for the stack's own)")


REFUSED = ("Prometheus at {url} wants credentials ({status}): set FLEET_PROMETHEUS_PASSWORD_FILE "
           "(`. build/prometheus-auth/fleet.env` sets it for the stack's own)")


class Prometheus:
    """Prometheus's HTTP API wherever it is published (fleet/adapters/endpoints.py): when it does not
    answer, the next address, and Swarm is asked again where it runs."""

    def __init__(self, endpoints: Endpoints | str, timeout: float = 2.0):
        """`timeout`: seconds one query may take in all, its whole answer read (within.py)."""
        self.endpoints = fixed(endpoints) if isinstance(endpoints, str) else endpoints
        self.timeout, self.auth, self.verify = timeout, credentials(), tls()

    @property
    def url(self) -> str:
        return self.endpoints.current

    def close(self) -> None:
        """Nothing held between queries (each has a client of its own, for its deadline)."""

    def _get(self, path: str, params: dict) -> httpx.Response:
        try:
            return self.endpoints.first(lambda url: request_within("GET", f"{url}{path}", self.timeout, params=params,
                                                                   auth=self.auth, verify=self.verify), 2)
        except Unanswered as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise ProviderError(UNTRUSTED.format(url=self.url, error="certificate verify failed")) from None
            raise ProviderError(f"Prometheus did not answer: {e}") from None

    def _data(self, path: str, params: dict) -> list:
        """A query's `data.result`; ProviderError when Prometheus does not answer, or answers an error."""
        r = self._get(path, params)
        if r.status_code in (401, 403):
            raise ProviderError(REFUSED.format(url=self.url, status=r.status_code))
        try:
            doc = r.json()
        except ValueError as e:
            raise ProviderError(f"Prometheus at {self.url} answered something other than JSON: {e!r}") from None
        if r.status_code != 200 or doc.get("status") != "success":
            raise ProviderError(f"Prometheus at {self.url} answered {r.status_code}: {doc.get('error', r.text[:200])}")
        return doc["data"]["result"]

    def query(self, promql: str) -> list[Sample]:
        """An instant query's samples; [] when it has no data."""
        result = self._data("/api/v1/query", {"query": promql})
        return [Sample(s["metric"], float(s["value"][1])) for s in result]

    def range(self, promql: str, start: float, end: float, step: float) -> list[tuple[float, float]]:
        """A range query's first series as (epoch seconds, value); [] when it has no data."""
        result = self._data("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                     "step": f"{step:g}"})
        return [(float(t), float(v)) for t, v in result[0]["values"] if v not in ("NaN", "+Inf", "-Inf")] \
            if result else []

    def scalar(self, promql: str) -> float | None:
        samples = self.query(promql)
        return samples[0].value if samples else None


def role_window(prom: Prometheus, service: str, servers: str, window: float, replicas: int,
                max_age: float) -> Stats | None:
    """The /predict requests of one Swarm service's replicas over the last `window` seconds, as Stats,
    or None when the evidence is missing, stale or partial: fewer than `replicas` targets scraped
    successfully within `max_age` seconds. Errors are the replicas' own 5xx or, when higher, what the
    gateway saw of the role's servers (`servers`: their name prefix there): 5xx, connection and
    response errors a replica never sees."""
    sel = f'{SCRAPED},service="{service}"'
    fresh = prom.scalar(f'count(up{{{sel}}} == 1 and (time() - timestamp(up{{{sel}}})) < {max_age:g})') or 0
    if replicas < 1 or fresh < replicas:
        return None
    w = f"{max(2, int(window))}s"
    route = f'{sel},{PREDICTIONS}'
    requests = prom.scalar(f"sum(increase(fleet_request_seconds_count{{{route}}}[{w}]))")
    if requests is None:
        return None
    errors = prom.scalar(f'sum(increase(fleet_requests_total{{{route},status=~"5.."}}[{w}]))') or 0.0
    at_gateway = f'{GATEWAY_SCRAPED},server=~"{servers}[0-9]+"'
    gateway_errors = prom.scalar(
        f'sum(increase(haproxy_server_http_responses_total{{{at_gateway},code="5xx"}}[{w}])) '
        f'+ sum(increase(haproxy_server_connection_errors_total{{{at_gateway}}}[{w}])) '
        f'+ sum(increase(haproxy_server_response_errors_total{{{at_gateway}}}[{w}]))') or 0.0
    unserved = prom.scalar(f'sum(increase(haproxy_backend_http_responses_total{{{GATEWAY_SCRAPED},proxy="replicas",'
                           f'code="5xx"}}[{w}]))') or 0.0  # failed for clients: on every server tried
    latency = prom.scalar(f"sum(increase(fleet_request_seconds_sum{{{route}}}[{w}]))") or 0.0
    by_origin = prom.query(f"sum by (le, origin) (increase(fleet_request_seconds_bucket{{{route}}}[{w}]))")
    buckets, synthetic = {}, {}
    for s in by_origin:
        le = float(s.labels["le"])
        buckets[le] = buckets.get(le, 0.0) + s.value
        if s.labels.get("origin") == "synthetic":
            synthetic[le] = s.value
    classes = prom.query(f'sum by (class) (increase(fleet_predictions_total{{{sel},origin="organic"}}[{w}]))')
    return Stats(round(requests), round(max(errors, gateway_errors)), latency, tuple(sorted(buckets.items())),
                 int(fresh), tuple(sorted(synthetic.items())),
                 tuple(sorted((s.labels["class"], s.value) for s in classes if "class" in s.labels)), round(unserved))
