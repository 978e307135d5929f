"""What a deploy changes in each service of a stack, and how each change is applied: a pure plan.

Like compose's `convergence_plan()`, the decision is a value: `plan()` compares the stack file's services
(as `docker stack config` renders them) with the running ones (their Swarm specs), both first brought
to one shape (`desired` and `live`), and says per service and key what changes and how:

- create / remove: services only in the file / only running (removed last, once the rest worked);
- canary: a service whose rollout policy is `canary` (fleet/core/policy.py) and whose containers change
  (image or digest, environment, command, entrypoint, resources) goes through fleet's canary;
- rolling: other container changes go through Swarm's rolling update (the service's update_config);
- update: replica count and labels, applied by Swarm without replacing containers;
- refuse: the file would put back an image that a fleet rollout has since replaced (see `reverts`).

`fleet diff` prints the plan; `fleet deploy` executes it. Everything here reads only its arguments.
"""
import shlex
from dataclasses import dataclass, field
from enum import Enum

from . import policy, secrets
from .records import Revision

CONTAINER_KEYS = ("image", "digest", "environment", "command", "entrypoint", "resources")
SERVICE_KEYS = ("replicas", "labels")
STACK_LABELS = ("com.docker.stack.",)  # written by `docker stack deploy` itself, never in the file


class How(str, Enum):
    NONE = "unchanged"
    CREATE = "create"
    REMOVE = "remove"
    UPDATE = "update"  # Swarm applies it without replacing containers (scale, labels)
    ROLLING = "rolling"  # Swarm's rolling update
    CANARY = "canary"  # fleet's canary: golden gate, steps, evidence, promotion or rollback
    REFUSE = "refuse"


@dataclass(frozen=True)
class KeyChange:
    key: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True)
class ServiceChange:
    service: str  # the short name, as in the stack file
    how: How
    changes: tuple[KeyChange, ...] = ()
    note: str = ""

    def keys(self) -> list[str]:
        return [c.key for c in self.changes]

    def top_keys(self) -> set[str]:
        """The keys changed, without the variable: `environment`, not `environment.FOO`."""
        return {c.key.split(".")[0] for c in self.changes}


@dataclass(frozen=True)
class DeployPlan:
    services: tuple[ServiceChange, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return any(s.how is not How.NONE for s in self.services)

    @property
    def refused(self) -> list[ServiceChange]:
        return [s for s in self.services if s.how is How.REFUSE]

    @property
    def canaries(self) -> list[ServiceChange]:
        return [s for s in self.services if s.how is How.CANARY]

    def of(self, service: str) -> ServiceChange | None:
        return next((s for s in self.services if s.service == service), None)


def _show(value) -> str:
    """A value as `fleet diff` prints it, any URL in it redacted (a webhook's token in a label)."""
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return secrets.redact_text(shlex.join(str(v) for v in value))
    return secrets.redact_text(str(value))


# one shape for both sides ---------------------------------------------------------------------------
def _argv(value) -> list[str] | None:
    if value in (None, "", []):
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _bytes(value) -> int | None:
    if value in (None, ""):
        return None
    text = str(value).strip().lower().rstrip("b")
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(float(text))


def _resources(limits_memory, limits_cpus, reserve_memory, reserve_cpus) -> dict:
    found = {"limits.memory": _bytes(limits_memory), "limits.cpus": float(limits_cpus) if limits_cpus else None,
             "reservations.memory": _bytes(reserve_memory),
             "reservations.cpus": float(reserve_cpus) if reserve_cpus else None}
    return {k: v for k, v in found.items() if v}


def env_dict(entries: list[str] | None) -> dict[str, str]:
    """A `K=V` list (Swarm's Env, compose's list form) as a dict; a bare `K` is K set empty."""
    return dict(e.split("=", 1) if "=" in e else (e, "") for e in entries or [])


def _image(ref: str) -> tuple[str, str | None]:
    name, _, digest = ref.partition("@")
    return name, digest or None


def desired(svc: dict, digest: str | None = None) -> dict:
    """A service of the stack file (as `docker stack config` prints it) in the comparable shape.
    `digest`: what the registry holds now for its image's tag, when known (a rebuilt tag is a change)."""
    deploy = svc.get("deploy") or {}
    res = deploy.get("resources") or {}
    limits, reserve = res.get("limits") or {}, res.get("reservations") or {}
    image, pinned = _image(str(svc.get("image", "")))
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = env_dict(env)
    return {"image": image, "digest": pinned or digest,
            "environment": {str(k): "" if v is None else str(v) for k, v in env.items()},
            "command": _argv(svc.get("command")), "entrypoint": _argv(svc.get("entrypoint")),
            "resources": _resources(limits.get("memory"), limits.get("cpus"), reserve.get("memory"),
                                    reserve.get("cpus")),
            "replicas": int(deploy.get("replicas", 1)) if deploy.get("mode", "replicated") == "replicated" else None,
            "labels": {str(k): str(v) for k, v in (deploy.get("labels") or {}).items()}}


def live(spec: dict) -> dict:
    """A running service's Swarm spec in the comparable shape."""
    template = spec["TaskTemplate"]
    container = template["ContainerSpec"]
    res = template.get("Resources") or {}
    limits, reserve = res.get("Limits") or {}, res.get("Reservations") or {}
    image, digest = _image(container["Image"])
    cpus = lambda r: r.get("NanoCPUs") / 1e9 if r.get("NanoCPUs") else None  # noqa: E731
    replicated = spec.get("Mode", {}).get("Replicated")
    return {"image": image, "digest": digest,
            "environment": env_dict(container.get("Env")),
            "command": _argv(container.get("Args")), "entrypoint": _argv(container.get("Command")),
            "resources": _resources(limits.get("MemoryBytes"), cpus(limits), reserve.get("MemoryBytes"),
                                    cpus(reserve)),
            "replicas": replicated.get("Replicas", 1) if replicated is not None else None,
            "labels": {k: v for k, v in (spec.get("Labels") or {}).items() if not k.startswith(STACK_LABELS)}}


# the plan -------------------------------------------------------------------------------------------
def differences(want: dict, have: dict) -> list[KeyChange]:
    """Key by key (environment and labels variable by variable). A digest counts only when both sides
    know it and the image names agree (a local tag has none)."""
    found = []
    for key in CONTAINER_KEYS + SERVICE_KEYS:
        old, new = have.get(key), want.get(key)
        if key == "digest":
            if old and new and have.get("image") == want.get("image") and old != new:
                found.append(KeyChange(key, old, new))
        elif key in ("environment", "labels"):
            old, new = old or {}, new or {}
            found += [KeyChange(f"{key}.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k)]
        elif key == "resources":
            old, new = old or {}, new or {}
            found += [KeyChange(f"resources.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k)]
        elif old != new:
            found.append(KeyChange(key, old, new))
    return found


def reverts(file_image: str, running_image: str, history: list[Revision]) -> Revision | None:
    """The promotion the file's image would undo, else None. The rule: the service runs an image that a
    fleet rollout promoted (revision b), and the file names an image the service ran before it (a
    deployed or promoted revision a < b). A file naming an image new to the history is a new release, not
    a revert; one naming the running image changes nothing."""
    if file_image == running_image:
        return None
    promoted = [h for h in history if h.outcome == "promoted" and _image(h.image)[0] == running_image]
    if not promoted:
        return None
    b = promoted[-1]
    earlier = [h for h in history if h.revision < b.revision and h.stable and _image(h.image)[0] == file_image]
    return b if earlier else None


def plan(want: dict[str, dict], have: dict[str, dict], history: dict[str, list[Revision]] | None = None,
         replace_promoted: bool = False) -> DeployPlan:
    """What a deploy does to each service. `want`: the file's services (short name -> `desired`);
    `have`: the running ones (short name -> `live`); `history`: fleet's revisions per service.
    `replace_promoted`: the user's explicit word that the file's older image is to replace a promoted one."""
    out = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            out.append(ServiceChange(name, How.CREATE))
            continue
        if name not in want:
            out.append(ServiceChange(name, How.REMOVE))
            continue
        changes = tuple(differences(want[name], have[name]))
        container = [c for c in changes if c.key.split(".")[0] in CONTAINER_KEYS]
        governed = policy.governs(want[name]["labels"])
        undone = reverts(want[name]["image"], have[name]["image"], (history or {}).get(name, []))
        if undone and not replace_promoted:
            out.append(ServiceChange(name, How.REFUSE, changes, note=(
                f"the file names {want[name]['image']}, but revision {undone.revision} promoted "
                f"{have[name]['image']} since: deploying would undo that promotion. Put {have[name]['image']} in "
                f"the stack file, or deploy again with --replace-promoted to roll back to "
                f"{want[name]['image']} through a canary")))
        elif container and governed:
            out.append(ServiceChange(name, How.CANARY, changes, note="through fleet's canary (its rollout policy)"))
        elif container:
            out.append(ServiceChange(name, How.ROLLING, changes, note="Swarm's rolling update (update_config)"))
        elif changes:
            out.append(ServiceChange(name, How.UPDATE, changes, note="Swarm applies it; containers stay"))
        else:
            out.append(ServiceChange(name, How.NONE))
    return DeployPlan(tuple(out))


def pin_container(doc_svc: dict, spec: dict) -> dict:
    """The stack file's service with its containers as they run now (image, environment, command,
    entrypoint, resources): deployed so, Swarm changes everything else but leaves its tasks alone,
    and the canary carries the container change. Pure: returns a new dict."""
    svc = {**doc_svc}
    container = spec["TaskTemplate"]["ContainerSpec"]
    svc["image"] = container["Image"]
    svc["environment"] = env_dict(container.get("Env"))
    for key, field_ in (("command", "Args"), ("entrypoint", "Command")):
        if container.get(field_):
            svc[key] = list(container[field_])
        else:
            svc.pop(key, None)
    res = spec["TaskTemplate"].get("Resources") or {}
    deploy = {**(svc.get("deploy") or {})}
    resources = {**(deploy.get("resources") or {})}
    for side, key in (("limits", "Limits"), ("reservations", "Reservations")):
        got = res.get(key) or {}
        part = {k: v for k, v in (resources.get(side) or {}).items() if k not in ("memory", "cpus")}
        if got.get("MemoryBytes"):
            part["memory"] = str(got["MemoryBytes"])
        if got.get("NanoCPUs"):
            part["cpus"] = f"{got['NanoCPUs'] / 1e9:g}"
        resources[side] = part
    resources = {k: v for k, v in resources.items() if v}
    if resources:
        deploy["resources"] = resources
    else:
        deploy.pop("resources", None)
    svc["deploy"] = deploy
    return svc


# a deploy's canary: the container settings it carries -----------------------------------------------
SETTINGS = ("environment", "command", "entrypoint", "resources")


def settings(want: dict) -> dict:
    """The container settings (besides the image) a deploy's canary carries, from a `desired` shape."""
    return {k: want[k] for k in SETTINGS}


def runs(have: dict, image: str, container: dict | None) -> bool:
    """Whether a service (`live` shape) runs `image` (its digest too, where `image` is pinned) and,
    when given, these container settings."""
    return not mismatch(have, image, container)


def mismatch(have: dict, image: str, container: dict | None) -> list[KeyChange]:
    """What differs between a service (`live` shape) and `image` with these container settings."""
    name, digest = _image(image)
    want = {**have, "image": name, "digest": digest or have["digest"], **(container or {})}
    return [c for c in differences(want, have) if c.key.split(".")[0] in CONTAINER_KEYS]


def apply_settings(template: dict, want: dict) -> None:
    """Write container settings (`settings` shape) into a Swarm TaskTemplate, in place."""
    container = template["ContainerSpec"]
    container["Env"] = [f"{k}={v}" for k, v in want["environment"].items()]
    for key, field_ in (("command", "Args"), ("entrypoint", "Command")):
        if want[key]:
            container[field_] = list(want[key])
        else:
            container.pop(field_, None)
    res = template.setdefault("Resources", {})
    for side, key in (("limits", "Limits"), ("reservations", "Reservations")):
        part = {k: v for k, v in (res.get(key) or {}).items() if k not in ("MemoryBytes", "NanoCPUs")}
        if want["resources"].get(f"{side}.memory"):
            part["MemoryBytes"] = want["resources"][f"{side}.memory"]
        if want["resources"].get(f"{side}.cpus"):
            part["NanoCPUs"] = int(want["resources"][f"{side}.cpus"] * 1e9)
        res[key] = part


def update_flags(have: dict, want: dict) -> list[str]:
    """`docker service update` flags that bring a service (`live` shape) to these container settings."""
    flags = []
    env_have, env_want = have["environment"], want["environment"]
    flags += [a for k in sorted(set(env_have) - set(env_want)) for a in ("--env-rm", k)]
    flags += [a for k, v in sorted(env_want.items()) if env_have.get(k) != v for a in ("--env-add", f"{k}={v}")]
    if have["command"] != want["command"]:
        flags += ["--args", shlex.join(want["command"] or [])]
    if have["entrypoint"] != want["entrypoint"]:
        flags += ["--entrypoint", shlex.join(want["entrypoint"] or [])]
    names = {"limits.memory": "--limit-memory", "limits.cpus": "--limit-cpu",
             "reservations.memory": "--reserve-memory", "reservations.cpus": "--reserve-cpu"}
    for key, flag in names.items():
        if have["resources"].get(key) != want["resources"].get(key):
            value = want["resources"].get(key) or 0
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags
