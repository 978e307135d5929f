"""The replica's device and GPU memory (fleet_inference/devices.py): the GPU Swarm assigned a task, free memory
with the caching allocator's, sampling off the event loop, readiness over a fake device, CUDA errors."""
import asyncio
import threading

import pytest
import torch

from fleet_inference import devices
from fleet_inference.config import Settings
from fleet_inference.phases import GpuMemory, Limits, Phase, readiness
from fleet_inference.replica import Replica
from tests.kit.helpers import wait_until

UUIDS = ["GPU-0b1e6e63-aaaa-4f6e-9d61-000000000000", "GPU-7c2d8f10-bbbb-4c1a-8e52-111111111111"]
MiB = 1 << 20


def test_cuda_requested_without_gpu_is_an_error():
    if torch.cuda.is_available():
        assert devices.select_device("cuda", {}).type == "cuda"
    else:
        with pytest.raises(devices.DeviceError, match="no CUDA"):
            devices.select_device("cuda", {})


def test_cpu_and_auto_without_gpu_ignore_swarm_resources():
    env = {"DOCKER_RESOURCE_NVIDIA-GPU": UUIDS[1]}
    assert devices.select_device("cpu", env) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert devices.select_device("auto", env) == torch.device("cpu")


@pytest.mark.parametrize("env,expected", [
    ({"DOCKER_RESOURCE_NVIDIA-GPU": UUIDS[1]}, ("DOCKER_RESOURCE_NVIDIA-GPU", UUIDS[1])),
    ({"DOCKER_RESOURCE_GPU": "1,0"}, ("DOCKER_RESOURCE_GPU", "1")),  # several: the first
    ({"DOCKER_RESOURCE_FPGA": "3", "PATH": "/bin"}, None),  # not a GPU
    ({"DOCKER_RESOURCE_NVIDIA-GPU": " "}, None),
    ({}, None),
])
def test_the_gpu_swarm_assigned_is_read_from_the_task_environment(env, expected):
    assert devices.assigned_gpu(env) == expected


@pytest.mark.parametrize("name,uuids,index", [
    (UUIDS[1], UUIDS, 1),  # every GPU of the node visible: the assigned one by its UUID
    (UUIDS[1].removeprefix("GPU-").upper(), UUIDS, 1),  # torch's form, another case
    (UUIDS[1], UUIDS[1:], 0),  # the NVIDIA runtime shows only the assigned GPU
    ("1", UUIDS, 1),  # named by index
    ("3", UUIDS[:1], 0),  # by index, the runtime showing only it
])
def test_the_assigned_gpu_is_the_device_torch_sees_by_that_name(name, uuids, index):
    assert devices.gpu_index(name, uuids) == index


@pytest.mark.parametrize("name", ["GPU-ffffffff-0000-0000-0000-000000000000", "7", "fake0"])
def test_an_assigned_gpu_torch_does_not_see_is_an_error_naming_it(name):
    with pytest.raises(devices.DeviceError, match=f"DOCKER_RESOURCE_NVIDIA-GPU={name}: Swarm assigned a GPU "
                                                  "that torch does not see .*nvidia-smi -L"):
        devices.gpu_index(name, UUIDS, "DOCKER_RESOURCE_NVIDIA-GPU")


def test_memory_the_caching_allocator_holds_unused_counts_as_free():
    assert devices.free_with_cache(100 * MiB, reserved=600 * MiB, allocated=400 * MiB) == 300 * MiB
    assert devices.free_with_cache(100 * MiB, reserved=0, allocated=0) == 100 * MiB


def test_readiness_over_a_fake_device_is_sampled_off_the_event_loop():
    """The watch reads the device in a thread of its own; readiness turns degraded when the fake device's free
    memory falls under the watermark and ready again when it comes back."""
    free = {"bytes": 4096 * MiB}
    threads = set()

    def read() -> GpuMemory:
        threads.add(threading.current_thread().name)
        return GpuMemory(free["bytes"], 8192 * MiB)

    limits = Limits(max_queue=64, gpu_min_free_bytes=512 * MiB, gpu_max_used_pct=95.0)
    watch = devices.GpuWatch(read, every_s=0.01).start()
    try:
        wait_until(lambda: watch.latest is not None, 5, "a first sample")
        assert readiness(Phase.READY, "ok", 0, watch.latest, limits).status_code == 200
        free["bytes"] = 100 * MiB
        r = wait_until(lambda: (r := readiness(Phase.READY, "ok", 0, watch.latest, limits)).status_code == 429 and r,
                       5, "degraded once free memory is under the watermark")
        assert r.phase is Phase.DEGRADED and "100 MiB is under the watermark 512 MiB" in r.reason
        free["bytes"] = 4096 * MiB
        wait_until(lambda: readiness(Phase.READY, "ok", 0, watch.latest, limits).status_code == 200, 5, "ready again")
    finally:
        watch.stop()
    assert threads == {"gpu-memory"}


def test_a_failed_sample_keeps_the_last_one():
    calls = []

    def read() -> GpuMemory:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("CUDA error: unspecified launch failure")
        return GpuMemory(1, 2)

    watch = devices.GpuWatch(read, every_s=0.01).start()
    try:
        wait_until(lambda: len(calls) >= 3, 5, "samples after a failing one")
        assert watch.latest == GpuMemory(1, 2)
    finally:
        watch.stop()


@pytest.mark.parametrize("error,fatal", [
    (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
])
def test_a_cuda_error_at_inference_fails_the_replica_running_out_of_memory_does_not(error, fatal):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise error

    class Rows:  # a batch that stays where it is (this torch has no CUDA to move it to)
        def to(self, device):
            return self

    async def scenario() -> Phase:
        replica = Replica(Settings())
        replica._loop = asyncio.get_running_loop()
        replica.phase = Phase.READY
        replica.module, replica.device = Broken(), torch.device("cuda", 0)  # the device only named: never used
        with pytest.raises(type(error)):
            await asyncio.to_thread(replica._infer, (Rows(),))
        await asyncio.sleep(0)  # the phase change the batcher's thread scheduled
        return replica.phase, replica.reason

    phase, reason = asyncio.run(scenario())
    assert (phase is Phase.FAILED) is fatal
    if fatal:
        assert reason.startswith("CUDA error at inference: CUDA error: an illegal memory access")
