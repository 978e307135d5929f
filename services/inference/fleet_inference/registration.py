"""Self-registration in Consul (the seed pattern): each replica registers through the agent at
CONSUL_HTTP_ADDR with its version, and deregisters when it drains. Retries are bounded and logged."""
import logging
import socket
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


def service_definition(settings: Settings, manifest: Manifest, address: str) -> dict:
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
        "weights": {"Passing": max(1, settings.weight) * 256, "Warning": 256},
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
def register(settings: Settings, manifest: Manifest) -> str:
    definition = service_definition(settings, manifest, advertise_address(settings))
    _client(settings).agent.service.register(**definition)
    log.info("registered %s at %s:%s in Consul", definition["service_id"], definition["address"], settings.port)
    return definition["service_id"]


def deregister(settings: Settings) -> None:
    try:
        _client(settings).agent.service.deregister(service_id(settings))
        log.info("deregistered %s from Consul", service_id(settings))
    except Exception as e:  # Consul's check and DeregisterCriticalServiceAfter remain the safety net
        log.warning("could not deregister %s: %s", service_id(settings), e)
