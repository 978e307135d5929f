"""Docker Swarm through docker-py: services of a stack, their tasks and their containers' health."""
import copy
import json
import os
import re
import subprocess
import time
from datetime import datetime

import docker
import requests
from docker.errors import APIError, DockerException, NotFound, ImageNotFound

from ..core import capacity, changes, placement
from ..core.convergence import ServiceView
from ..errors import BadInput, Unreachable
from ..core.tasks import Service, Task
from .registry import LoginFailed, Registry, RegistryError
from .rotation import after, moved_on

STACK_LABEL = "com.docker.stack.namespace"
SKEW_EVERY = 60.0  # seconds between measures of the engine's clock (Swarm.skew)
TIMEOUT = 30  # seconds for an Engine API call (the event stream has none: it waits for events)
CLI_TIMEOUT = 120  # seconds for a docker CLI command
PATIENCE = 30.0  # seconds a request rides out managers that do not answer or have no leader (several engines)
API_VERSION = "1.41"  # Docker 20.10's, the oldest engine fleet runs on (Debian 12's); newer engines answer it


class EngineUnavailable(Unreachable):
    """The Docker engine does not answer or is not a Swarm manager (exit 3)."""


class NoLogin(LookupError):
    """An image this engine does not hold, in a registry that wants a login fleet lacks or refuses its login."""


def context_named() -> str | None:
    """The docker context fleet follows: DOCKER_CONTEXT's, unless DOCKER_HOST is set (which wins, as for the
    docker CLI) or it names the default. Never the CLI's *current* context: unset, fleet takes the socket."""
    name = os.environ.get("DOCKER_CONTEXT", "").strip()
    return None if os.environ.get("DOCKER_HOST") or name in ("", "default") else name


def engine_client() -> docker.DockerClient:
    """docker-py's client of the engine the docker CLI would use: DOCKER_HOST (with DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH), else DOCKER_CONTEXT's endpoint and TLS material, as `docker context inspect` reads them
    (under DOCKER_CONFIG; docker-py's own reader misses a config folder without a config.json), else the local
    socket. BadInput for a context that does not exist."""
    name = context_named()
    if name is None:
        return docker.from_env(timeout=TIMEOUT, version=API_VERSION)
    try:
        p = subprocess.run(["docker", "context", "inspect", name], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadInput(f"DOCKER_CONTEXT={name}: cannot run `docker context inspect` ({e})") from None
    if p.returncode != 0:
        raise BadInput(f"DOCKER_CONTEXT={name}: no such docker context; `docker context ls` lists them (under "
                       f"DOCKER_CONFIG, default ~/.docker): {p.stderr.strip()[:200]}")
    ctx = json.loads(p.stdout)[0]
    endpoint = ctx["Endpoints"]["docker"]
    material = os.path.join(ctx["Storage"]["TLSPath"], "docker")
    files = {f: os.path.join(material, f"{f}.pem") for f in ("ca", "cert", "key")}
    tls = False
    if any(os.path.isfile(f) for f in files.values()) or endpoint.get("SkipTLSVerify"):
        tls = docker.tls.TLSConfig(
            client_cert=(files["cert"], files["key"]) if os.path.isfile(files["cert"]) else None,
            ca_cert=files["ca"] if os.path.isfile(files["ca"]) else None, verify=not endpoint.get("SkipTLSVerify"))
    return docker.DockerClient(base_url=endpoint["Host"], tls=tls, timeout=TIMEOUT, version=API_VERSION)


class Swarm:
    def __init__(self, client: docker.DockerClient | None = None):
        hosts = [h.strip() for h in os.environ.get("DOCKER_HOST", "").split(",") if h.strip()]
        try:
            # a fixed API version: "auto" would ask the engine before trust_env is off (below)
            clients = [client] if client else [docker.from_env(timeout=TIMEOUT, version=API_VERSION,
                                                               environment={**os.environ, "DOCKER_HOST": h})
                                               for h in hosts] or [engine_client()]
        except DockerException as e:
            raise EngineUnavailable(f"cannot reach the Docker engine ({e}); start it or set DOCKER_HOST") from None
        if len(clients) > 1 and not all(h.startswith("tcp://") for h in hosts):
            raise EngineUnavailable("DOCKER_HOST lists several engines: each must be a manager's tcp:// address "
                                    f"(got {os.environ['DOCKER_HOST']!r})")
        self.client = clients[0]
        self.engines = [c.api.base_url for c in clients]  # the managers' engines fleet may ask, in order
        if len(clients) > 1:
            engine_failover(self.client.api, self.engines)
        # The engine's TLS is DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as for the docker CLI: requests would
        # otherwise let REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) replace the engine's CA (psf/requests#3829)
        self.client.api.trust_env = False
        self._labels: dict[str, dict[str, str]] = {}  # image pinned by digest -> its labels
        self._skew: tuple[float, float] | None = None  # (the engine's clock less fleet's, when measured)

    def skew(self) -> float:
        """How far the engine's clock is ahead of this machine's (seconds; negative: behind), from `docker
        info`'s SystemTime, measured at most once a minute. Swarm's timestamps (a task's creation, an update's
        start) are the manager's clock: read through `local_time`, they compare with fleet's own times. 0 when
        the engine does not say."""
        if self._skew is None or time.monotonic() - self._skew[1] > SKEW_EVERY:
            before = time.time()
            try:
                engine = _epoch(self.client.info().get("SystemTime"))
            except (DockerException, OSError, ValueError):
                engine = None
            after = time.time()
            self._skew = ((engine - (before + after) / 2) if engine is not None else 0.0, time.monotonic())
        return self._skew[0]

    def local_time(self, stamp: str | None) -> float | None:
        """A Swarm timestamp (RFC 3339, the manager's clock) as epoch seconds on this machine's clock."""
        at = _epoch(stamp)
        return None if at is None else at - self.skew()

    def check(self) -> None:
        try:
            info = self.client.info()
        except (DockerException, OSError) as e:
            which = f" of docker context {context_named()} at {self.client.api.base_url.split('://', 1)[-1]}" \
                if context_named() else ""
            raise EngineUnavailable(f"the Docker engine{which} does not answer ({e}); start it or set "
                                    f"{'DOCKER_CONTEXT' if which else 'DOCKER_HOST'}") from None
        swarm = info.get("Swarm", {})
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise EngineUnavailable("the Docker engine is not a Swarm manager: run "
                                    "`docker swarm init --advertise-addr 127.0.0.1` or point DOCKER_HOST at a manager")

    def stack_services(self, stack: str) -> list:
        """The stack's services as docker-py's objects (the adapter's and the tests' own reads)."""
        return self.client.services.list(filters={"label": f"{STACK_LABEL}={stack}"})

    def service(self, name: str):
        """A service as docker-py's object, or None (the adapter's and the tests' own reads)."""
        try:
            return self.client.services.get(name)
        except NotFound:
            return None

    def services(self, stack: str) -> list[Service]:
        """The stack's services, as values."""
        return [service_of(svc, self.local_time) for svc in self.stack_services(stack)]

    def describe(self, name: str) -> Service | None:
        """One service as a value, or None when there is none of that name."""
        svc = self.service(name)
        return service_of(svc, self.local_time) if svc is not None else None

    @property
    def local(self) -> bool:
        """Whether the engine is this machine's own (a Unix socket), not a remote manager (DOCKER_HOST=tcp://…)."""
        return self.client.api.base_url.startswith("http+docker://")

    def cli_env(self) -> dict[str, str]:
        """The environment for the docker CLI commands fleet runs, aimed at the engine docker-py talks to now
        (of several in DOCKER_HOST, the one that last answered): the TLS variables pass through, and without
        DOCKER_HOST the CLI gets docker-py's default socket, where it would otherwise follow its current
        context (which docker-py ignores); with DOCKER_CONTEXT, the CLI follows that context as fleet does."""
        if context_named():  # the CLI follows the same context, with its TLS material
            return dict(os.environ)
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
        env.setdefault("DOCKER_HOST", "unix:///var/run/docker.sock")
        if len(self.engines) > 1:
            env["DOCKER_HOST"] = "tcp://" + self.client.api.base_url.split("://", 1)[1]
        return env

    def published_url(self, service_name: str, target_port: int, scheme: str = "http") -> str | None:
        """The first of `published_urls`, or None."""
        urls = self.published_urls(service_name, target_port, scheme)
        return urls[0] if urls else None

    def published_urls(self, service_name: str, target_port: int, scheme: str = "http") -> list[str]:
        """scheme://host:port of the service's port published in host mode, one for each ready node a task
        of it runs on: 127.0.0.1 for this node's own engine, else the node's address (a manager's from
        ManagerStatus.Addr: its Status.Addr may be 0.0.0.0 or 127.0.0.1, moby#35437). Workers come first,
        so that fleet's own traffic spares the managers; [] when no task runs (or no such service or port)."""
        svc = self.service(service_name)
        if svc is None:
            return []
        ports = svc.attrs.get("Endpoint", {}).get("Ports") or svc.attrs["Spec"].get("EndpointSpec", {}).get("Ports") or []
        published = next((p.get("PublishedPort") for p in ports if p.get("TargetPort") == target_port), None)
        if not published:
            return []
        tasks = [t for t in svc.tasks({"desired-state": "running"}) if t.get("NodeID")]
        running = {t["NodeID"] for t in tasks if (t.get("Status") or {}).get("State") == "running"} \
            or {t["NodeID"] for t in tasks}
        own = self.client.info().get("Swarm", {}).get("NodeID") if self.local else None
        hosts = []
        for n in sorted(self.client.nodes.list(), key=lambda n: (n.attrs["Spec"]["Role"] == "manager", n.id)):
            if n.id not in running or n.attrs["Status"].get("State") != "ready":
                continue
            hosts.append("127.0.0.1" if n.id == own else node_address(n.attrs))
        if own in running:  # this machine's own node first: no network between
            hosts.sort(key=lambda h: h != "127.0.0.1")
        if self.local and not running:  # nothing runs yet: where a single-node Swarm will publish it
            hosts = ["127.0.0.1"]
        return [f"{scheme}://{h}:{published}" for h in hosts if h]

    def consul_url(self, stack: str) -> str | None:
        """The stack's own Consul, for when neither --consul nor CONSUL_HTTP_ADDR says where Consul is: the
        published HTTPS port of every agent it runs (its `consul` servers, then its `consul-agent` clients),
        at the address of each one's node (not 127.0.0.1), comma-separated (fleet's client moves on to the
        next when one does not answer); None when none runs."""
        urls = [u for name in ("consul", "consul-agent")
                for u in self.published_urls(f"{stack}_{name}", 8501, scheme="https")]
        return ",".join(dict.fromkeys(urls)) or None

    def nodes(self) -> list[dict]:
        """The Swarm's nodes: id, hostname, role, state (ready, down, …) and availability (active, pause, drain)."""
        return [{"id": n.id, "hostname": n.attrs["Description"]["Hostname"], "role": n.attrs["Spec"]["Role"],
                 "state": n.attrs["Status"]["State"], "availability": n.attrs["Spec"]["Availability"],
                 "address": n.attrs["Status"].get("Addr", ""), "labels": n.attrs["Spec"].get("Labels") or {},
                 "os": n.attrs["Description"].get("Platform", {}).get("OS", ""),
                 "arch": n.attrs["Description"].get("Platform", {}).get("Architecture", ""),
                 "engine_labels": n.attrs["Description"].get("Engine", {}).get("Labels") or {}}
                for n in self.client.nodes.list()]

    def capacity(self) -> list[capacity.NodeCapacity]:
        """Each node's generic resources (GPUs): those its engine advertises, and those assigned to the tasks
        Swarm keeps on it (desired running: starting, running, or being replaced)."""
        held: dict[str, dict[str, int]] = {}
        for t in self.client.api.tasks(filters={"desired-state": "running"}):
            node = held.setdefault(t.get("NodeID", ""), {})
            # the engine API names swarmkit's AssignedGenericResources "GenericResources" on a task
            for kind, n in capacity.count(t.get("GenericResources")).items():
                node[kind] = node.get(kind, 0) + n
        nodes = sorted(self.client.nodes.list(), key=lambda n: n.attrs["Description"]["Hostname"])
        return [capacity.NodeCapacity(
            node=n.attrs["Description"]["Hostname"],
            takes_tasks=n.attrs["Status"]["State"] == "ready" and n.attrs["Spec"]["Availability"] == "active",
            advertised=capacity.count(n.attrs["Description"].get("Resources", {}).get("GenericResources")),
            held=held.get(n.id, {})) for n in nodes]

    def pinned(self, image: str) -> str:
        """`image@sha256:…` as its registry holds it now, so that every node runs the same bytes (what
        `docker stack deploy` does by itself); the image as given when it is pinned already or names no
        registry (a local tag on a single node), or when the registry does not answer (the pull then fails
        and Swarm says why)."""
        if "@" in image or not names_registry(image):
            return image
        try:
            return f"{image}@{self.client.images.get_registry_data(image).id}"
        except (DockerException, OSError):
            return image

    def engine_image(self, image: str) -> str | None:
        """The image ID (`sha256:…`) that `image` names on this engine when no registry holds it (built
        here: no registry in its name, and not pulled by it: no repository digest of its repository; one
        pushed under another name is still this engine's); None otherwise. Swarm runs a bare ID as it is,
        where a tag is looked up again on every task's start."""
        if "@" in image or names_registry(image):
            return None
        try:
            found = self.client.images.get(image)
        except (DockerException, OSError):
            return None
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        pulled = any(d.partition("@")[0] in (repository, f"docker.io/{repository}", f"docker.io/library/{repository}")
                     for d in found.attrs.get("RepoDigests") or [])
        return None if pulled else found.id

    def tasks(self, service_name: str, desired_state: str | None = "running") -> list[Task]:
        filters = {"service": service_name}
        if desired_state:
            filters["desired-state"] = desired_state
        nodes = {n.id: n.attrs["Description"]["Hostname"] for n in self.client.nodes.list()}
        try:
            tasks = self.client.api.tasks(filters=filters)
        except NotFound:  # the service is gone
            return []
        return [self._task(t, service_name, nodes) for t in tasks]

    def _task(self, t: dict, service_name: str, nodes: dict) -> Task:
        status = t.get("Status", {})
        cstatus = status.get("ContainerStatus", {})
        container_id = cstatus.get("ContainerID", "")
        health, output = self.container_health(container_id) if container_id else (None, "")
        return Task(
            id=t["ID"], service=service_name, slot=t.get("Slot"), node=nodes.get(t.get("NodeID"), t.get("NodeID", "")),
            image=t["Spec"]["ContainerSpec"]["Image"].split("@")[0],
            digest=t["Spec"]["ContainerSpec"]["Image"].partition("@")[2] or None, state=status.get("State", ""),
            desired_state=t.get("DesiredState", ""), message=status.get("Message", ""), error=status.get("Err", ""),
            container_id=container_id, exit_code=cstatus.get("ExitCode"), health=health, health_output=output,
            spec_version=t.get("Version", {}).get("Index"), created_at=self.local_time(t.get("CreatedAt")),
        )

    def container_health(self, container_id: str) -> tuple[str | None, str]:
        """The container's health status and the output of its last health check. (None, "") for a
        container on another node: a manager's engine inspects only its own node's containers."""
        try:
            state = self.client.api.inspect_container(container_id)["State"]
        except (NotFound, APIError):
            return None, ""
        return health_of(state)

    def why_stopped(self, container_id: str) -> str:
        """Who ended a container that died, as far as the engine knows: the kernel for memory, Swarm (its
        task's desired state no longer running: an update, a scale-down, a removal), or '' (it exited by
        itself, or it is gone). An exit code 137 alone does not say which."""
        try:
            c = self.client.api.inspect_container(container_id)
        except (NotFound, APIError):
            return ""
        if c["State"].get("OOMKilled"):
            return "killed for memory (OOM)"
        task_id = (c["Config"].get("Labels") or {}).get("com.docker.swarm.task.id")
        if not task_id:
            return ""
        try:
            desired = self.client.api.inspect_task(task_id).get("DesiredState", "")
        except NotFound:  # a scale-down or the service's removal deletes the task itself
            desired = "removed"
        except APIError:
            return ""
        return f"Swarm stopped it (its task's desired state: {desired})" if desired not in ("", "running", "ready") \
            else ""

    def view(self, service: Service) -> ServiceView:
        """What convergence needs to know of a service's spec and update status."""
        health = service.task_template["ContainerSpec"].get("Healthcheck") or {}
        return ServiceView(
            name=service.name, image=service.image_name, digest=service.image.partition("@")[2] or None,
            replicas=self.desired_replicas(service.spec),
            has_healthcheck=bool(health.get("Test")) and health["Test"] != ["NONE"],
            consul_name=consul_name(service.name, service.spec) if service.registers else None,
            version=self.image_label(self.running_build(service) or service.image, "fleet.model-version"),
            update_state=service.update_state, update_message=service.update_message,
            update_started_at=service.update_started_at)

    def desired_replicas(self, spec: dict) -> int:
        """Replicas asked for; for a global service, one a node that is ready and active and that its placement
        constraints allow (the stack's Consul servers on managers, its client agents on workers)."""
        if "Global" in spec["Mode"]:
            constraints = spec["TaskTemplate"].get("Placement", {}).get("Constraints")
            return sum(n["state"] == "ready" and n["availability"] == "active" and placement.allows(constraints, n)
                       for n in self.nodes())
        return spec["Mode"].get("Replicated", {}).get("Replicas", 1)

    def image_label(self, image: str, label: str) -> str | None:
        """One label, or None when the image cannot be read (asked once per image in this process when it
        is pinned by digest: a registry that does not answer does not slow every later view)."""
        try:
            return self.image_labels(image).get(label)
        except LookupError:
            if "@" in image:
                self._labels[image] = {}
            return None

    def image_labels(self, image: str) -> dict[str, str]:
        """The image's labels: from this engine when it holds the image, else from its registry (a
        manager never pulled an image that only workers run, nor one CI just pushed). Cached for an image
        pinned by digest (its bytes cannot change). LookupError naming both places when neither has it."""
        if image in self._labels:
            return self._labels[image]
        try:
            labels = self.client.images.get(image).labels or {}
        except (ImageNotFound, APIError):
            if not names_registry(image.split("@")[0]) and "@" not in image:
                raise LookupError(f"image {image} does not exist on this engine and names no registry: build "
                                  "it here, or push it to a registry and give its full name") from None
            try:
                labels = self._registry().labels(image)
            except RegistryError as e:
                raise (NoLogin if isinstance(e, LoginFailed) else LookupError)(
                    f"image {image} is not on this engine, and its registry cannot give it: {e}") from None
        if "@" in image:
            self._labels[image] = labels
        return labels

    def login_problem(self, image: str) -> str | None:
        """Why the nodes could not pull `image` with this client's registry login (it wants one fleet does not
        have, or refuses it), or None: the image is on this engine, names no registry, can be read, or its
        registry does not answer now (Swarm's pull says more than fleet could)."""
        if not names_registry(image.split("@")[0]):
            return None
        try:
            self.image_labels(image)
        except NoLogin as e:
            return str(e)
        except LookupError:
            pass
        return None

    def _registry(self) -> Registry:
        """A registry reader that speaks plain HTTP where this engine does (its insecure registries)."""
        try:
            configs = self.client.info().get("RegistryConfig", {}).get("IndexConfigs") or {}
        except (DockerException, OSError):
            configs = {}
        return Registry(insecure={name for name, c in configs.items() if not c.get("Secure", True)})

    def logs(self, container_id: str, lines: int = 5) -> str:
        try:
            return self.client.api.logs(container_id, tail=lines).decode(errors="replace").strip()
        except (NotFound, APIError):
            return ""

    def spec_versions(self, stack: str) -> dict[str, int]:
        return {s.name: s.attrs["Version"]["Index"] for s in self.stack_services(stack)}

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT,
                              env=self.cli_env())

    def stack_deploy(self, files: list[str], stack: str) -> None:
        """`docker stack deploy`, the docker CLI's own compose conversion (not rewritten here). It pins
        each image to its registry digest (--resolve-image always, the CLI's default) where a registry
        answers; local tags stay tags. Without --prune: `fleet deploy` removes what the file dropped
        itself, last (and never a canary). --with-registry-auth: the nodes pull a private image with this
        client's login (Docker's, DOCKER_CONFIG or ~/.docker), as fleet's own service specs carry it."""
        proc = self._cli("stack", "deploy", "--with-registry-auth", *[a for f in files for a in ("-c", f)], stack)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip() or proc.stdout.strip())

    def stack_remove(self, stack: str) -> None:
        self._cli("stack", "rm", stack)

    def rollback(self, service_name: str) -> None:
        self._cli("service", "rollback", "--detach", service_name)

    def put_spec(self, service_name: str, spec: dict) -> None:
        """Update the service to exactly `spec` (a spec read from Swarm earlier): what a failed deploy puts
        back. Its image stays pinned as it was (by digest), so what ran before runs again."""
        svc = self.client.services.get(service_name)
        self.client.api.update_service(
            svc.id, svc.attrs["Version"]["Index"], task_template=spec.get("TaskTemplate"), name=spec.get("Name"),
            labels=spec.get("Labels") or {}, mode=spec.get("Mode"), update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"), endpoint_spec=spec.get("EndpointSpec"))

    def create_canary(self, stable: Service, name: str, image: str, replicas: int, settings: dict | None = None) -> str:
        """A second service from the stable one's live spec: same stack namespace, networks, health check
        and update policy; the new image (and a deploy's container `settings`: environment, command,
        entrypoint, resources), `replicas` replicas, role canary (label and FLEET_ROLE), weight 0 (no share).
        The image pinned: by its registry's digest, or by its ID where only this engine has it."""
        spec = copy.deepcopy(dict(stable.spec))
        template = spec["TaskTemplate"]
        if settings:
            changes.apply_settings(template, settings)
        container = template["ContainerSpec"]
        container["Image"] = self.engine_image(image) or self.pinned(image)  # what it runs is what is judged
        # weight 0: out of the gateway's weighted pool until fleet gives the canary a share
        container["Env"] = [e for e in container.get("Env", []) if not e.startswith(("FLEET_ROLE=", "FLEET_WEIGHT="))] \
            + ["FLEET_ROLE=canary", "FLEET_WEIGHT=0"]
        container.setdefault("Labels", {})["fleet.role"] = "canary"
        short = name.split("_", 1)[-1]
        for net in template.get("Networks", []):
            net["Aliases"] = [short]
        labels = {**(spec.get("Labels") or {}), "fleet.role": "canary", "fleet.canary-of": stable.name,
                  "com.docker.stack.image": image}
        template.pop("ForceUpdate", None)
        return self.client.api.create_service(
            template, name=name, labels=labels, mode={"Replicated": {"Replicas": replicas}},
            update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"))["ID"]

    def update_image(self, service_name: str, image: str, flags: list[str] = ()) -> None:
        """Swarm's own rolling update to `image`, pinned (the service's update_config, with `flags` over it),
        with this client's registry login for the nodes' pulls."""
        proc = self._cli("service", "update", "--detach", "--no-resolve-image", "--with-registry-auth", *flags,
                         "--image", self.pinned(image), service_name)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip() or proc.stdout.strip())

    def container_events(self, service_id: str, since: float):
        """Docker's event stream for the service's containers (die, oom, health_status), until closed.
        By service ID: an earlier service of the same name may still be stopping its containers."""
        return self.client.events(decode=True, since=int(since + self.skew()), filters={  # `since` on its clock
            "type": "container", "label": f"com.docker.swarm.service.id={service_id}"})

    def running_build(self, service: Service) -> str | None:
        """The image ID that every running container of a service on an engine's tag runs, all started from
        its spec's image: what that spec runs (a tag rebuilt since names another build, which Swarm would
        start only for a new spec). None for an image pinned or in a registry, or while they differ."""
        if self.engine_image(service.image) is None:
            return None
        running = self.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service.name}"})
        refs = {c.attrs["Config"]["Image"].split("@")[0] for c in running}
        builds = {c.attrs["Image"] for c in running}
        return builds.pop() if running and refs == {service.image_name} and len(builds) == 1 else None

    def containers_left(self, service_name: str) -> bool:
        return bool(self.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service_name}"}))

    def remove(self, service_name: str) -> None:
        svc = self.service(service_name)
        if svc:
            svc.remove()


def health_of(state: dict) -> tuple[str | None, str]:
    """A container's health status and its last check's output, from `docker inspect`'s State. Docker
    marks a container that stopped `unhealthy` (it resets the status when health monitoring ends): unless
    its last check failed, that is its exit, reported `stopped`, never a failed check. Pure."""
    health = state.get("Health")
    if not health:
        return None, ""
    log = health.get("Log") or []
    last = log[-1] if log else {}
    status = health.get("Status")
    if status == "unhealthy" and not state.get("Running") and last.get("ExitCode", 0) == 0:
        status = "stopped"
    return status, last.get("Output", "").strip()


def consul_name(service_name: str, spec: dict, default: str = "inference") -> str:
    """The name a service's replicas register under in Consul: their FLEET_SERVICE_NAME, with Swarm's
    template filled in as Swarm fills it for each task (the stack's file scopes it by stack). Pure."""
    env = dict(e.split("=", 1) for e in spec["TaskTemplate"]["ContainerSpec"].get("Env", []) if "=" in e)
    return render(env.get("FLEET_SERVICE_NAME", default), service_name, spec.get("Labels") or {})


TEMPLATE = re.compile(r'\{\{\s*(?:index\s+\.Service\.Labels\s+"([^"]+)"|\.Service\.Name)\s*\}\}')


def render(value: str, service_name: str, labels: dict) -> str:
    """The Swarm service templates fleet meets in its own settings, `{{.Service.Name}}` and
    `{{index .Service.Labels "KEY"}}`, filled in as Swarm does for a task of this service. Pure."""
    return TEMPLATE.sub(lambda m: labels.get(m.group(1), "") if m.group(1) else service_name, value)


def node_address(attrs: dict) -> str:
    """A node's address that other machines reach: a manager's from ManagerStatus.Addr (host:port), as
    Status.Addr is 0.0.0.0 or 127.0.0.1 on some managers; "" when neither is usable. Pure."""
    for addr in ((attrs.get("ManagerStatus") or {}).get("Addr", "").rsplit(":", 1)[0],
                 (attrs.get("Status") or {}).get("Addr", "")):
        if addr and addr != "0.0.0.0" and not addr.startswith("127."):
            return addr
    return ""


def names_registry(image: str) -> bool:
    """Whether an image reference starts with a registry host (`host.domain/…`, `host:port/…`, `localhost/…`),
    as Docker reads references; `fleet/inference:2` names none (Docker Hub, or a local tag)."""
    first, slash, _ = image.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def _epoch(stamp: str | None) -> float | None:
    """An RFC 3339 time as Docker writes them (nanoseconds; UTC, or the daemon's zone in SystemTime) as
    epoch seconds; None for none. ValueError for another text."""
    if not stamp:
        return None
    m = STAMP.match(stamp.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    zone = m.group(3) if m.group(3) and m.group(3) != "Z" else "+00:00"
    return datetime.fromisoformat(m.group(1) + zone).timestamp() + float("0." + (m.group(2) or "0")[:9])


def service_of(svc, local=None) -> Service:
    """docker-py's service object as a value: the one place its attributes are read for fleet. `local`:
    a Swarm timestamp on this machine's clock (Swarm.local_time; the manager's own clock without it)."""
    spec = svc.attrs["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    update = svc.attrs.get("UpdateStatus") or {}
    replicated = spec.get("Mode", {}).get("Replicated")
    return Service(id=svc.id, name=svc.name, version=svc.attrs["Version"]["Index"], labels=spec.get("Labels") or {},
                   image=container["Image"], env=tuple(container.get("Env") or ()),
                   replicas=replicated.get("Replicas", 1) if replicated is not None else None,
                   update_state=update.get("State"), update_message=update.get("Message", ""),
                   update_started_at=(local or _epoch)(update.get("StartedAt")), spec=spec)


def engine_failover(api, bases: list[str]) -> None:
    """docker-py's client moved on to the next of `bases` (the engines of several managers of one Swarm) when the
    one a request used does not answer (refused, unreachable, timed out) or answers that its Swarm has no leader
    (503, while the managers elect one). A request tries each engine once a round; it goes round again, after a
    pause, only while some engine said "no leader", for up to PATIENCE s. The client stays on the engine that
    answered; threads share it, as fleet/adapters/consul.py's `failover` does for Consul's agents."""
    request = api.request

    def each(method, url, *args, **kw):
        failed: list[str] = []
        began, unled, error = time.monotonic(), None, None  # unled: the last "no leader" answer this round
        while True:
            used = api.base_url
            try:
                response = request(method, url, *args, **kw)
                if response.status_code != 503:
                    return response
                unled = response
            except (requests.ConnectionError, requests.Timeout) as e:
                error = e
            failed.append(used)
            left = after(bases, used, failed)
            if not left:
                if unled is None:
                    raise error
                if time.monotonic() - began > PATIENCE:
                    return unled
                time.sleep(1.0)  # a leader being elected: every engine again
                failed, unled, left = [], None, after(bases, used, [])
            api.base_url = moved_on(api.base_url, used, failed, left)
            url = api.base_url + url[len(used):] if url.startswith(used) else url
    api.request = each
