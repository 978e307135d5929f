"""The device a replica runs on, and its GPU memory as readiness reads it.

On a GPU node, Swarm gives each replica one GPU of the node's generic resources (the stack's
`generic_resources` reservation, the node's `node-generic-resources`) and names it in the task's
environment: `DOCKER_RESOURCE_<KIND>=<the resource's name>`, a GPU's UUID or index. The replica runs on
that GPU, whether the NVIDIA runtime shows the container only it or every GPU of the node.

GPU memory is read off the event loop: a thread samples the device (a CUDA call can block for seconds,
initialising the context while the model loads), readiness reads the last sample. Free memory is what
the device reports plus what torch's caching allocator holds without using, which a new allocation of
this replica gets back.
"""
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence

import torch

from .phases import GpuMemory

log = logging.getLogger("fleet_inference.devices")

RESOURCE_PREFIX = "DOCKER_RESOURCE_"
SAMPLE_EVERY_S = 1.0


class DeviceError(Exception):
    """The replica cannot have the device it was given: the message names it and the fix."""


def assigned_gpu(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, name) of the GPU Swarm assigned this task: the first name of a DOCKER_RESOURCE_* variable whose
    kind names a GPU (NVIDIA-GPU, GPU, ...); None when there is none. Pure."""
    for key in sorted(env):
        if key.startswith(RESOURCE_PREFIX) and "GPU" in key[len(RESOURCE_PREFIX):].upper():
            names = [n.strip() for n in env[key].split(",") if n.strip()]
            if names:
                return key, names[0]
    return None


def gpu_index(name: str, uuids: Sequence[str], variable: str = "DOCKER_RESOURCE_GPU") -> int:
    """The index among the devices torch sees (their UUIDs, in order) of the GPU named `name`: a UUID (with
    or without nvidia-smi's "GPU-" prefix) or an index. Pure."""
    bare = name.removeprefix("GPU-").lower()
    for i, uuid in enumerate(uuids):
        if uuid.removeprefix("GPU-").lower() == bare:
            return i
    if name.isascii() and name.isdigit():
        index = int(name)
        if index < len(uuids):
            return index
        if len(uuids) == 1:  # the NVIDIA runtime shows the container only its own GPU, as cuda:0
            return 0
    raise DeviceError(f"{variable}={name}: Swarm assigned a GPU that torch does not see (it sees "
                      f"{len(uuids)}: {', '.join(uuids) or 'none'}); name the node's GPUs by their UUIDs "
                      "(nvidia-smi -L) in the daemon's node-generic-resources")


def free_with_cache(device_free: int, reserved: int, allocated: int) -> int:
    """Free memory for readiness: the device's, plus what the caching allocator holds but does not use. Pure."""
    return device_free + max(0, reserved - allocated)


def select_device(wanted: str, env: Mapping[str, str] | None = None) -> torch.device:
    """FLEET_DEVICE (auto, cpu, cuda) as a torch device; on CUDA, the GPU Swarm assigned, if it did."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise DeviceError("FLEET_DEVICE=cuda but torch sees no CUDA device: use auto or cpu, or give the task a GPU")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted != "cuda":
        return torch.device(wanted)
    given = assigned_gpu(os.environ if env is None else env)
    if given is None:
        return torch.device("cuda", 0)
    uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    return torch.device("cuda", gpu_index(given[1], uuids, given[0]))


def is_cuda_error(e: BaseException) -> bool:
    """A CUDA error that leaves the device unusable (an illegal access, a lost device); not running out of
    memory, which fails only the batch that asked. Pure."""
    if isinstance(e, torch.OutOfMemoryError):
        return False
    accelerator = getattr(torch, "AcceleratorError", None)
    return (accelerator is not None and isinstance(e, accelerator)) or \
        (isinstance(e, RuntimeError) and "CUDA error" in str(e))


def cuda_reader(device: torch.device) -> Callable[[], GpuMemory]:
    def read() -> GpuMemory:
        free, total = torch.cuda.mem_get_info(device)
        return GpuMemory(free_with_cache(free, torch.cuda.memory_reserved(device),
                                         torch.cuda.memory_allocated(device)), total)
    return read


class GpuWatch:
    """The device's memory, sampled every `every_s` by a thread of its own; `latest` is the last sample."""

    def __init__(self, read: Callable[[], GpuMemory], every_s: float = SAMPLE_EVERY_S):
        self.read, self.every_s = read, every_s
        self.latest: GpuMemory | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-memory", daemon=True)

    def start(self) -> "GpuWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.latest = self.read()
            except Exception:  # keep the last sample; the next one may succeed
                log.exception("could not read the GPU's memory")
            self._stop.wait(self.every_s)
