"""The service's CUDA path, run directly with Python where a GPU is: the same code a replica runs
(fleet_inference/devices.py, phases.py, model_store.py: they need only torch), without Docker, which
the GPU machine lacks. It prints:
  1. device selection as a replica does it: FLEET_DEVICE=auto, and the GPU Swarm would assign named by
     its UUID in DOCKER_RESOURCE_NVIDIA-GPU;
  2. batched inference of the demo's model on the GPU against the CPU: rows/s per batch size, and ratios;
  3. readiness from GPU memory: ready, then degraded (429) while an allocation holds all but 256 MiB
     of the device, then ready again once it is freed (torch's cache counted free), read by the same
     GpuWatch thread a replica uses;
  4. running out of GPU memory is not a fatal CUDA error (only the batch that asked fails).
Where torch sees no GPU, it runs the CPU half and says so. It exits 1 when a GPU check fails.

    PYTHONPATH=services/inference:. python bench/gpu_bench.py [--model build/models/v2] [--seconds 2]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services/inference"))
sys.path.insert(0, str(ROOT))  # fleet_protocol, which the service imports

from fleet_inference import devices, model_store  # noqa: E402
from fleet_inference.phases import Limits, Phase, readiness  # noqa: E402

BATCHES = (1, 8, 64, 256, 1024)
MIB = 1 << 20


def throughput(module, manifest, device: torch.device, batch: int, seconds: float) -> float:
    """Rows per second of `module` on `device` at `batch` rows a call, inputs already on the device."""
    low, high = manifest.inputs[0].range or (0.0, 1.0)
    x = (torch.rand(batch, *manifest.inputs[0].shape) * (high - low) + low).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(3):
            module(x)
        sync()
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            module(x)
            calls += 1
        sync()
    return calls * batch / (time.perf_counter() - started)


def wait_sample(watch: devices.GpuWatch, after: float, deadline_s: float = 10.0):
    """The first sample the watch takes after `after` (perf_counter), or None by the deadline."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if watch.latest is not None and getattr(watch, "taken", 0) > after:
            return watch.latest
        time.sleep(0.05)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "build/models/v2"), help="a model package (default: the demo's v2)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per batch size and device")
    args = ap.parse_args()
    failures = []

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs {torch.cuda.device_count()}")
    auto = devices.select_device("auto", env={})
    print(f"1. FLEET_DEVICE=auto -> {auto}")
    gpu = torch.cuda.is_available()
    if gpu:
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        name = torch.cuda.get_device_name(0)
        given = devices.select_device("cuda", env={"DOCKER_RESOURCE_NVIDIA-GPU": f"GPU-{uuid}"})
        print(f"   DOCKER_RESOURCE_NVIDIA-GPU=GPU-{uuid} -> {given} ({name})")
        if given != torch.device("cuda", 0) or auto.type != "cuda":
            failures.append("device selection")
    else:
        print("   torch sees no GPU: the CUDA half below is skipped (this is not a GPU machine)")

    targets = [torch.device("cpu")] + ([torch.device("cuda", 0)] if gpu else [])
    rates: dict[str, dict[int, float]] = {}
    for device in targets:
        module, manifest = model_store.load_artifact(args.model, device)
        model_store.warm_up(module, manifest, device, Path(args.model))
        rates[device.type] = {b: throughput(module, manifest, device, b, args.seconds) for b in BATCHES}
    print(f"2. model {manifest.name} v{manifest.version}: rows/s by batch size")
    print("   batch " + "".join(f"{d:>14}" for d in rates) + ("   gpu/cpu" if gpu else ""))
    for b in BATCHES:
        row = "".join(f"{rates[d][b]:>14,.0f}" for d in rates)
        print(f"   {b:>5} {row}" + (f"   {rates['cuda'][b] / rates['cpu'][b]:7.1f}x" if gpu else ""))

    if not gpu:
        return 0
    device = torch.device("cuda", 0)
    limits = Limits(max_queue=64, gpu_min_free_bytes=512 * MIB, gpu_max_used_pct=95.0)
    read = devices.cuda_reader(device)

    def timed_read():
        memory = read()
        watch.taken = time.perf_counter()
        return memory
    watch = devices.GpuWatch(timed_read, every_s=0.2)
    watch.start()
    answers = []
    try:
        for label, hold in (("at rest", False), ("all but 256 MiB allocated", True), ("freed", False)):
            block = None
            if hold:
                free, _ = torch.cuda.mem_get_info(device)
                block = torch.empty(free - 256 * MIB, dtype=torch.uint8, device=device)
            elif label == "freed":
                torch.cuda.synchronize(device)
            memory = wait_sample(watch, time.perf_counter())
            answer = readiness(Phase.READY, "model loaded", 0, memory, limits)
            raw_free, _ = torch.cuda.mem_get_info(device)
            print(f"3. {label:<26} free {memory.free_bytes / MIB:>9,.0f} MiB (the device says {raw_free / MIB:,.0f}) "
                  f"of {memory.total_bytes / MIB:,.0f}: {answer.phase.value} {answer.status_code} {answer.reason}")
            answers.append(answer.phase)
            del block
    finally:
        watch.stop()
    if answers != [Phase.READY, Phase.DEGRADED, Phase.READY]:
        failures.append(f"readiness went {[a.value for a in answers]}")

    try:
        torch.empty(2 * torch.cuda.get_device_properties(0).total_memory, dtype=torch.uint8, device=device)
        failures.append("an allocation of twice the device's memory succeeded")
    except torch.OutOfMemoryError as e:
        fatal = devices.is_cuda_error(e)
        print(f"4. out of memory -> {type(e).__name__}; fatal CUDA error: {fatal}")
        if fatal:
            failures.append("out of memory counted as a fatal CUDA error")
    print("failed: " + "; ".join(failures) if failures else "all GPU checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
