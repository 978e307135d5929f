"""Self-registration in Consul (the seed pattern): each replica registers through the agent at
CONSUL_HTTP_ADDR with its version, and deregisters when it drains. Retries are bounded and logged.

Traffic weights: fleet writes a weight per role to Consul KV (`fleet/traffic/<service>/<role>`); each
replica follows its key with a blocking query and re-registers with the new weight, which the gateway
reads from Consul's DNS SRV records. Without a key, FLEET_WEIGHT applies."""
import logging
import socket
import threading
from urllib.parse import urlparse

import consul
import tenacity

from .config import Settings
from .model_store import Manifest

log = logging.getLogger("fleet_inference.registration")


def advertise_address(settings: Settings) -> str:
    """The address other containers reach this replica on: the source address of the route to Consul."""
    if settings.advertise_addr:
        return settings.advertise_addr
    target = urlparse(settings.consul_addr).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((target, 9))  # UDP connect sends nothing; it only picks the route
        return s.getsockname()[0]


def service_id(settings: Settings) -> str:
    return f"{settings.service_name}-{settings.task_id or socket.gethostname()}"


MAX_WEIGHT = 255  # Consul weight 255 x 256 is the highest the gateway maps below its own 256


def weight_key(settings: Settings) -> str:
    return f"fleet/traffic/{settings.service_name}/{settings.role}"


def parse_weight(raw: bytes | None, default: int) -> int:
    """The weight a KV value asks for, clamped to 1..255; the default when absent or unreadable. Pure."""
    try:
        return min(MAX_WEIGHT, max(1, int(raw))) if raw is not None else default
    except ValueError:
        return default


def service_definition(settings: Settings, manifest: Manifest, address: str, weight: int | None = None) -> dict:
    """The agent registration for this replica. Pure."""
    return {
        "name": settings.service_name,
        "service_id": service_id(settings),
        "address": address,
        "port": settings.port,
        "tags": [settings.role, f"v{manifest.version}"],
        "meta": {"version": manifest.version, "model": manifest.name, "model_sha256": manifest.sha256,
                 "role": settings.role, "task_id": settings.task_id},
        # The gateway maps SRV weight w to w/256+1, so weights shift traffic in multiples of 256.
        "weights": {"Passing": max(1, settings.weight if weight is None else weight) * 256, "Warning": 256},
        "check": {"http": f"http://{address}:{settings.port}/ready", "interval": settings.check_interval,
                  "timeout": "2s", "DeregisterCriticalServiceAfter": settings.deregister_after},
    }


def _client(settings: Settings) -> consul.Consul:
    url = urlparse(settings.consul_addr if "://" in settings.consul_addr else f"http://{settings.consul_addr}")
    return consul.Consul(host=url.hostname, port=url.port or 8500, scheme=url.scheme,
                         token=settings.consul_token or None)


_retry = tenacity.retry(
    retry=tenacity.retry_if_not_exception_type((TypeError, ValueError)),  # a bug is not retried
    stop=tenacity.stop_after_delay(120),
    wait=tenacity.wait_exponential(multiplier=0.2, max=5),
    before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
    reraise=True,
)


@_retry
def register(settings: Settings, manifest: Manifest) -> tuple[str, int]:
    """Register with the weight fleet asks for now; returns the KV index to follow from."""
    c = _client(settings)
    index, item = c.kv.get(weight_key(settings))
    weight = parse_weight(item["Value"] if item else None, settings.weight)
    definition = service_definition(settings, manifest, advertise_address(settings), weight)
    c.agent.service.register(**definition)
    log.info("registered %s at %s:%s in Consul, weight %d", definition["service_id"], definition["address"],
             settings.port, weight)
    return weight, index


def follow_weight(settings: Settings, manifest: Manifest, weight: int, index: int, stop: threading.Event) -> None:
    """Re-register whenever fleet changes this role's weight, until `stop` is set (the replica drains)."""
    c, address = _client(settings), advertise_address(settings)
    while not stop.is_set():
        try:
            index, item = c.kv.get(weight_key(settings), index=index, wait="10s")
        except Exception as e:  # Consul restarting: keep the registered weight, ask again shortly
            log.warning("cannot watch %s: %s", weight_key(settings), e)
            stop.wait(1.0)
            continue
        wanted = parse_weight(item["Value"] if item else None, settings.weight)
        if wanted != weight and not stop.is_set():
            c.agent.service.register(**service_definition(settings, manifest, address, wanted))
            log.info("weight %d -> %d (%s)", weight, wanted, weight_key(settings))
            weight = wanted


def deregister(settings: Settings) -> None:
    try:
        _client(settings).agent.service.deregister(service_id(settings))
        log.info("deregistered %s from Consul", service_id(settings))
    except Exception as e:  # Consul's check and DeregisterCriticalServiceAfter remain the safety net
        log.warning("could not deregister %s: %s", service_id(settings), e)
