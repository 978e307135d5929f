"""What fleet knows about a stack, as frozen values: tasks, replicas in Consul, service summaries."""
from dataclasses import dataclass, field


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
