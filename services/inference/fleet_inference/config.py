"""The service's settings, read once from the environment (ecosystem names where one exists)."""
import math
import os
from dataclasses import dataclass
from pathlib import Path

from fleet_protocol import secret


def _float(env: dict, key: str, default: float) -> float:
    return float(env.get(key, default))


def _int(env: dict, key: str, default: int) -> int:
    return int(env.get(key, default))


def cpu_quota(cpu_max: str | None = None, cfs_quota: str | None = None, cfs_period: str | None = None) -> float | None:
    """CPUs the container may use by its cgroup's quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us` and
    `cpu.cfs_period_us`); None when there is no quota. Pure: the files' contents are passed in."""
    try:
        if cpu_max:
            quota, period = cpu_max.split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if cfs_quota and cfs_period and int(cfs_quota) > 0:
            return int(cfs_quota) / int(cfs_period)
    except (ValueError, IndexError, ZeroDivisionError):
        pass
    return None


def torch_threads(cores: int, quota: float | None) -> int:
    """Threads for torch: the CPUs this container may use (its quota, its cores), less one for the event
    loop, at least one. Pure."""
    cpus = cores if quota is None else min(cores, max(1, math.ceil(quota)))
    return max(1, cpus - 1)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def default_torch_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return torch_threads(cores, cpu_quota(_read("/sys/fs/cgroup/cpu.max"), _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                          _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")))


@dataclass(frozen=True)
class Settings:
    model_path: str = "/models/current"
    device: str = "auto"  # auto | cpu | cuda
    port: int = 8000
    admin_port: int = 8001  # /health and /ready, answered by the probe server (fleet_inference/admin.py)
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 512
    max_rows: int = 64
    max_body_bytes: int = 256 * 1024
    torch_threads: int = 0  # 0: from the container's CPU quota and cores, less one for the event loop
    gpu_min_free_mb: int = 512
    gpu_max_used_pct: float = 95.0
    drain_seconds: float = 3.0
    drain_timeout: float = 10.0
    consul_addr: str = ""  # empty: do not register
    consul_token: str = ""  # CONSUL_HTTP_TOKEN, or the file CONSUL_HTTP_TOKEN_FILE names (a Swarm secret)
    consul_cacert: str = ""
    consul_client_cert: str = ""
    consul_client_key: str = ""
    consul_tls_server_name: str = ""  # the name Consul's certificate is checked against, if not the address's
    service_name: str = "inference"
    role: str = "stable"
    task_id: str = ""
    node: str = ""  # the Swarm node's hostname: the replica registers with the Consul agent of that name
    advertise_addr: str = ""
    weight: int = 100
    check_interval: str = "1s"
    deregister_after: str = "1m"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        device = env.get("FLEET_DEVICE", "auto")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"FLEET_DEVICE={device!r}: use auto, cpu or cuda")
        return cls(
            model_path=env.get("MODEL_PATH", cls.model_path),
            device=device,
            port=_int(env, "FLEET_PORT", cls.port),
            admin_port=_int(env, "FLEET_ADMIN_PORT", cls.admin_port),
            max_batch=_int(env, "FLEET_MAX_BATCH", cls.max_batch),
            max_wait_ms=_float(env, "FLEET_MAX_WAIT_MS", cls.max_wait_ms),
            max_queue=_int(env, "FLEET_MAX_QUEUE", cls.max_queue),
            max_rows=_int(env, "FLEET_MAX_ROWS", cls.max_rows),
            max_body_bytes=_int(env, "FLEET_MAX_BODY_BYTES", cls.max_body_bytes),
            torch_threads=_int(env, "FLEET_TORCH_THREADS", 0) or default_torch_threads(),
            gpu_min_free_mb=_int(env, "FLEET_GPU_MIN_FREE_MB", cls.gpu_min_free_mb),
            gpu_max_used_pct=_float(env, "FLEET_GPU_MAX_USED_PCT", cls.gpu_max_used_pct),
            drain_seconds=_float(env, "FLEET_DRAIN_SECONDS", cls.drain_seconds),
            drain_timeout=_float(env, "FLEET_DRAIN_TIMEOUT", cls.drain_timeout),
            consul_addr=env.get("CONSUL_HTTP_ADDR", ""),
            consul_token=secret(env, "CONSUL_HTTP_TOKEN"),
            consul_cacert=env.get("CONSUL_CACERT", ""),
            consul_client_cert=env.get("CONSUL_CLIENT_CERT", ""),
            consul_client_key=env.get("CONSUL_CLIENT_KEY", ""),
            consul_tls_server_name=env.get("CONSUL_TLS_SERVER_NAME", ""),
            service_name=env.get("FLEET_SERVICE_NAME", cls.service_name),
            role=env.get("FLEET_ROLE", cls.role),
            task_id=env.get("FLEET_TASK_ID", ""),
            node=env.get("FLEET_NODE", ""),
            advertise_addr=env.get("FLEET_ADVERTISE_ADDR", ""),
            weight=_int(env, "FLEET_WEIGHT", cls.weight),
            check_interval=env.get("FLEET_CHECK_INTERVAL", cls.check_interval),
            deregister_after=env.get("FLEET_DEREGISTER_AFTER", cls.deregister_after),
        )
