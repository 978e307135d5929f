"""Reading an image where it lives: its labels from the registry's manifest and config (Docker Registry
HTTP API v2 / OCI distribution), so that a new image pushed by CI is known to fleet before any node has
pulled it. A Swarm manager's engine has only the images its own tasks ran.

With the login Docker would use (`docker_login`: DOCKER_CONFIG's or ~/.docker's config.json, its `auths`,
`credsStore` and `credHelpers`, through docker-py and the `docker-credential-*` helpers), or anonymously
where there is none: the registry's Basic challenge is answered with it, its Bearer challenge by asking its
token service with it (anonymously for a public repository), as the docker CLI does. A registry that
wants a login fleet does not have, or refuses the one it has, is a `LoginFailed` naming
`docker login <registry>`. The registry's CA (and a client certificate) come from
/etc/docker/certs.d/<registry>/, as for the engine. A registry on a loopback address, or one the engine
lists as insecure, is spoken to over plain HTTP when HTTPS fails, as Docker itself does.
"""
import base64
import functools
import ipaddress
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker.auth
import httpx
from docker.errors import DockerException

from .within import request_within

TIMEOUT = 10.0  # seconds one request to a registry may take in all, its whole answer read (within.py)
DOCKER_HUB = "registry-1.docker.io"
MANIFESTS = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


CERTS_D = Path("/etc/docker/certs.d")  # the engine's per-registry CAs and client certificates


class RegistryError(Exception):
    """The registry did not answer, or has no such image (the message says which)."""


class LoginFailed(RegistryError):
    """The registry wants a login that fleet does not have, or refused the one it has."""


def docker_login(registry: str) -> dict | None:
    """The login Docker would use for `registry` (username and password, or an identity token; keys in lower
    case), from DOCKER_CONFIG's config.json (default ~/.docker) through docker-py: `auths`, and the
    `credsStore` or `credHelpers` helper it names; None when there is none. LoginFailed when a helper fails."""
    try:
        found = docker.auth.load_config().resolve_authconfig(None if registry == DOCKER_HUB else registry)
    except DockerException as e:  # the helper is missing or failed
        raise LoginFailed(f"cannot read the login for {registry} ({e}); check `docker login {registry}`") from None
    found = {k.lower(): v for k, v in (found or {}).items() if v}
    return found if found.get("password") or found.get("identitytoken") else None


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


@functools.cache
def tls_for(registry: str, certs_d: Path = CERTS_D) -> ssl.SSLContext | bool:
    """How a registry's certificate is checked, as the engine does: the system's CAs and every `*.crt` in
    certs.d/<registry>/, with its `client.cert` and `client.key` when there; True (the system's) without."""
    folder = certs_d / registry
    if not folder.is_dir():
        return True
    context = httpx.create_ssl_context(trust_env=False)
    for ca in sorted(folder.glob("*.crt")):
        context.load_verify_locations(cafile=str(ca))
    if (folder / "client.cert").is_file() and (folder / "client.key").is_file():
        context.load_cert_chain(str(folder / "client.cert"), str(folder / "client.key"))
    return context


class Registry:
    def __init__(self, insecure: set[str] = frozenset(), platform: str = "linux/amd64",
                 login: Callable[[str], dict | None] = docker_login, certs_d: Path = CERTS_D):
        self.insecure = set(insecure)  # registries the engine speaks plain HTTP to
        self.platform = platform
        self.login, self.certs_d = login, certs_d
        self._auth: dict[str, str] = {}  # registry -> the Authorization header that worked

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
        if ref.registry in self._auth:
            headers["Authorization"] = self._auth[ref.registry]
        r = self._request(ref.registry, url, headers)
        if r.status_code in (401, 403) and "Authorization" in headers:  # a token that expired: once anew
            del self._auth[ref.registry], headers["Authorization"]
            r = self._request(ref.registry, url, headers)
        if r.status_code == 401:
            login = self.login(ref.registry)
            authorization = self._authorization(r.headers.get("WWW-Authenticate", ""), ref, login)
            if authorization is not None:
                r = self._request(ref.registry, url, {**headers, "Authorization": authorization})
            if authorization is None or r.status_code in (401, 403):
                raise self._refused(ref, login, r.status_code)
            self._auth[ref.registry] = authorization
        return r

    def _request(self, registry: str, url: str, headers: dict) -> httpx.Response:
        try:
            return self._send(f"https://{registry}{url}", headers=headers, verify=tls_for(registry, self.certs_d))
        except httpx.HTTPError as e:
            if not (loopback(registry) or registry in self.insecure):
                raise RegistryError(f"the registry {registry} did not answer over HTTPS ({e}); its CA goes in "
                                    f"{self.certs_d / registry}/ca.crt, as for the engine") from None
        try:  # Docker's rule: a loopback or an insecure registry may speak plain HTTP
            return self._send(f"http://{registry}{url}", headers=headers)
        except httpx.HTTPError as e:
            raise RegistryError(f"the registry {registry} did not answer ({e})") from None

    @staticmethod
    def _send(url: str, verify: ssl.SSLContext | bool = True, **kwargs) -> httpx.Response:
        """A GET within TIMEOUT in all, never through a proxy meant for other traffic."""
        return request_within("GET", url, TIMEOUT, trust_env=False, follow_redirects=True, verify=verify, **kwargs)

    @staticmethod
    def _refused(ref: Reference, login: dict | None, status: int) -> LoginFailed:
        if not login:
            return LoginFailed(f"the registry {ref.registry} wants a login to read {ref.repository} ({status}) and "
                               f"fleet has none: run `docker login {ref.registry}` (fleet reads Docker's logins, "
                               "in DOCKER_CONFIG or ~/.docker)")
        return LoginFailed(f"the registry {ref.registry} refused the login of {login.get('username') or 'its token'} "
                           f"for {ref.repository} ({status}): run `docker login {ref.registry}` again")

    def _authorization(self, challenge: str, ref: Reference, login: dict | None) -> str | None:
        """The Authorization header that answers the registry's challenge: Basic with the login; Bearer with
        a token from its token service, asked with the login (anonymously without one: public images)."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not login or not login.get("password"):
                return None
            pair = f"{login.get('username', '')}:{login['password']}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if scheme != "bearer":
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            return None
        ask = {"service": params.get("service", ""), "scope": f"repository:{ref.repository}:pull"}
        auth = (login.get("username", ""), login["password"]) if login and login.get("password") else None
        try:
            if login and login.get("identitytoken"):  # an OAuth2 refresh token, as `docker login` may keep
                r = request_within("POST", params["realm"], TIMEOUT, trust_env=False, verify=tls_for(ref.registry, self.certs_d),
                                   data={**ask, "grant_type": "refresh_token", "client_id": "fleet",
                                         "refresh_token": login["identitytoken"]})
            else:
                r = self._send(params["realm"], verify=tls_for(ref.registry, self.certs_d), params=ask,
                               **({"auth": auth} if auth else {}))
            if r.status_code in (401, 403):
                raise self._refused(ref, login, r.status_code)
            token = r.json().get("token") or r.json().get("access_token")
        except (httpx.HTTPError, ValueError):
            return None
        return f"Bearer {token}" if token else None
