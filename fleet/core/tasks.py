"""What fleet knows about a stack, as frozen values: Swarm's services and tasks, replicas in Consul
(fleet/adapters/ parses the engine's and Consul's answers into these, once)."""
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Service:
    """One Swarm service as fleet reads it."""
    id: str
    name: str
    version: int  # the spec's version: each update of the service changes it
    labels: Mapping[str, str]
    image: str  # as the spec has it: pinned (`name@sha256:…`) where a registry answered
    env: tuple[str, ...]
    replicas: int | None  # asked for; None for a global service
    update_state: str | None = None  # Swarm's UpdateStatus: updating, completed, rollback_started, paused, …
    update_message: str = ""
    update_started_at: float | None = None  # epoch seconds
    # the engine's Spec: what fleet/core's translations of a spec read (changes.live, capacity.reservations,
    # the promotion's flags), and the canary copies
    spec: Mapping = field(default_factory=dict, repr=False, compare=False)

    @property
    def image_name(self) -> str:
        """The image without its digest."""
        return self.image.split("@")[0]

    @property
    def is_global(self) -> bool:
        return self.replicas is None

    @property
    def registers(self) -> bool:
        """Whether its replicas register in Consul (its spec sets CONSUL_HTTP_ADDR): the services fleet rolls out."""
        return any(e.startswith("CONSUL_HTTP_ADDR=") for e in self.env)

    @property
    def task_template(self) -> Mapping:
        return self.spec.get("TaskTemplate") or {}

    @property
    def update_config(self) -> Mapping | None:
        return self.spec.get("UpdateConfig")


@dataclass(frozen=True)
class Task:
    """One Swarm task and its container, as `docker stack ps` and `docker inspect` report them."""
    id: str
    service: str
    slot: int | None
    node: str
    image: str  # the spec's image without its digest
    state: str  # Swarm's task state: new, pending, ..., running, failed, shutdown, rejected
    desired_state: str
    message: str = ""
    error: str = ""
    container_id: str = ""
    exit_code: int | None = None
    # starting | healthy | unhealthy | stopped (exited with no failed check); None without a healthcheck, or
    # for a container on another node than the engine's (Swarm's state `running` then says its first check
    # passed: a task starts until it does)
    health: str | None = None
    health_output: str = ""
    spec_version: int | None = None
    created_at: float | None = None  # epoch seconds
    digest: str | None = None  # sha256:… when the spec pins the image (a registry's), else None


@dataclass(frozen=True)
class Instance:
    """One service instance in Consul's catalog with its aggregated check status."""
    id: str
    name: str
    address: str
    port: int
    version: str
    role: str
    task_id: str
    status: str  # passing | warning | critical
    output: str = ""
    weights: dict = field(default_factory=dict)
