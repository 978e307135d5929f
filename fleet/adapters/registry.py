"""Reading an image where it lives: its labels from the registry's manifest and config (Docker Registry
HTTP API v2 / OCI distribution), so that a new image pushed by CI is known to fleet before any node has
pulled it. A Swarm manager's engine has only the images its own tasks ran.

Anonymous pulls, with the registry's bearer-token challenge answered as the docker CLI does for public
repositories. A registry on a loopback address, or one the engine lists as insecure, is spoken to over
plain HTTP when HTTPS fails, as Docker itself does.
"""
import ipaddress
import re
from dataclasses import dataclass

import httpx

from .within import request_within

TIMEOUT = 10.0  # seconds one request to a registry may take in all, its whole answer read (within.py)
DOCKER_HUB = "registry-1.docker.io"
MANIFESTS = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


class RegistryError(Exception):
    """The registry did not answer, or has no such image (the message says which)."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]
    repository: str
    reference: str  # a tag or a digest

    @classmethod
    def parse(cls, image: str) -> "Reference":
        """`host:port/repo/name:tag`, `repo/name@sha256:…`, `name` (Docker Hub's library). Pure."""
        name, _, digest = image.partition("@")
        first, slash, rest = name.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, name = first, rest
        else:
            registry = DOCKER_HUB
            name = name if "/" in name else f"library/{name}"
        repo, tag = (name.rsplit(":", 1) if ":" in name.rsplit("/", 1)[-1] else (name, ""))
        return cls(registry, repo, digest or tag or "latest")


def loopback(registry: str) -> bool:
    """Whether a registry (host[:port], [v6]:port) is on this machine's loopback. Pure."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 or registry.startswith("[") else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Registry:
    def __init__(self, insecure: set[str] = frozenset(), platform: str = "linux/amd64"):
        self.insecure = set(insecure)  # registries the engine speaks plain HTTP to
        self.platform = platform
        self._tokens: dict[str, str] = {}

    def labels(self, image: str) -> dict[str, str]:
        """The image's labels, read from its config blob in the registry (the platform's manifest of a list)."""
        ref = Reference.parse(image)
        manifest = self._json(ref, f"manifests/{ref.reference}", MANIFESTS)
        if "manifests" in manifest:  # a list or an index: the platform's image
            os_, arch = self.platform.split("/", 1)
            chosen = next((m for m in manifest["manifests"] if m.get("platform", {}).get("os") == os_
                           and m.get("platform", {}).get("architecture") == arch), None)
            if chosen is None:
                raise RegistryError(f"{image} has no {self.platform} image in {ref.registry}")
            manifest = self._json(ref, f"manifests/{chosen['digest']}", MANIFESTS)
        if "config" not in manifest:
            raise RegistryError(f"{image}: the registry answered a manifest without a config (schema 1?)")
        config = self._json(ref, f"blobs/{manifest['config']['digest']}", "*/*")
        return (config.get("config") or {}).get("Labels") or {}

    # HTTP -------------------------------------------------------------------------------------
    def _json(self, ref: Reference, path: str, accept: str) -> dict:
        r = self._get(ref, path, accept)
        if r.status_code == 404:
            raise RegistryError(f"{ref.registry} has no {ref.repository}:{ref.reference} (404)")
        if r.status_code != 200:
            raise RegistryError(f"{ref.registry} answered {r.status_code} for {ref.repository} {path}: {r.text[:200]}")
        try:
            return r.json()
        except ValueError:
            raise RegistryError(f"{ref.registry} answered {path} with something other than JSON") from None

    def _get(self, ref: Reference, path: str, accept: str) -> httpx.Response:
        url = f"/v2/{ref.repository}/{path}"
        headers = {"Accept": accept}
        if ref.registry in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[ref.registry]}"
        r = self._request(ref.registry, url, headers)
        if r.status_code == 401 and "Authorization" not in headers:
            token = self._token(r.headers.get("WWW-Authenticate", ""), ref)
            if token:
                self._tokens[ref.registry] = token
                r = self._request(ref.registry, url, {**headers, "Authorization": f"Bearer {token}"})
        return r

    def _request(self, registry: str, url: str, headers: dict) -> httpx.Response:
        try:
            return self._send(f"https://{registry}{url}", headers=headers)
        except httpx.HTTPError as e:
            if not (loopback(registry) or registry in self.insecure):
                raise RegistryError(f"the registry {registry} did not answer over HTTPS ({e})") from None
        try:  # Docker's rule: a loopback or an insecure registry may speak plain HTTP
            return self._send(f"http://{registry}{url}", headers=headers)
        except httpx.HTTPError as e:
            raise RegistryError(f"the registry {registry} did not answer ({e})") from None

    @staticmethod
    def _send(url: str, **kwargs) -> httpx.Response:
        """A GET within TIMEOUT in all, never through a proxy meant for other traffic."""
        return request_within("GET", url, TIMEOUT, trust_env=False, follow_redirects=True, **kwargs)

    def _token(self, challenge: str, ref: Reference) -> str | None:
        """An anonymous pull token for a `Bearer realm=…,service=…` challenge."""
        if not challenge.lower().startswith("bearer "):
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            return None
        try:
            r = self._send(params["realm"], params={"service": params.get("service", ""),
                                                    "scope": f"repository:{ref.repository}:pull"})
            doc = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return doc.get("token") or doc.get("access_token")
