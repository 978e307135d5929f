"""One replica's runtime: loads the model in the background, batches inference, drains on SIGTERM."""
import asyncio
import gc
import logging
import threading
import time
from pathlib import Path

import torch

from . import devices, model_store, registration, tuning
from .batching import DynamicBatcher
from .config import Settings
from .metrics import Metrics
from .phases import GpuMemory, Limits, Phase, Readiness, liveness_status, readiness
from .probes import ProbeServer

log = logging.getLogger("fleet_inference")


class Replica:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.phase = Phase.LOADING
        self.reason = f"loading {settings.model_path}"
        self.device: torch.device | None = None
        self.gpu: devices.GpuWatch | None = None  # on CUDA: the device's memory, sampled off the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self.manifest: model_store.Manifest | None = None
        self.module = None
        self.in_flight = 0
        self.batcher = DynamicBatcher(self._infer, settings.max_batch, settings.max_wait_ms / 1000,
                                      settings.max_queue, on_batch=self._observe_batch,
                                      on_dropped=self.metrics.dropped_rows.inc)
        self.apply_config(tuning.defaults(settings))
        self.probes = ProbeServer(settings.admin_port, self.probe_answers, settings.task_id)
        self._tasks: list[asyncio.Task] = []
        self.registration: registration.Registration | None = None
        self.follower: tuning.Follower | None = None
        self._set_phase(Phase.LOADING, self.reason)

    # lifecycle -------------------------------------------------------------------------------
    def _set_phase(self, phase: Phase, reason: str) -> None:
        self.phase, self.reason = phase, reason
        self.metrics.phase.state(phase.value)
        self.probes.changed()
        log.info("phase %s: %s", phase.value, reason)

    async def start(self) -> None:
        torch.set_num_threads(self.settings.torch_threads)
        self._loop = asyncio.get_running_loop()
        self.batcher.start()
        self.probes.start()
        self._tasks.append(asyncio.create_task(self._load()))
        if self.settings.consul_addr:
            loop = asyncio.get_running_loop()
            self.follower = tuning.Follower(self.settings, registration.client,
                                            lambda values: loop.call_soon_threadsafe(self.apply_config, values))
            threading.Thread(target=self.follower.run, name="consul-config", daemon=True).start()

    def apply_config(self, values: dict) -> None:
        """Live configuration (fleet_inference/tuning.py): the next batch and readiness use it."""
        self.config = dict(values)
        self.batcher.max_batch = max(1, values["max_batch"])
        self.batcher.max_wait_s = values["max_wait_ms"] / 1000
        self.batcher.max_queue = values["max_queue"]
        self.limits = Limits(values["max_queue"], values["gpu_min_free_mb"] << 20, values["gpu_max_used_pct"])

    async def _load(self) -> None:
        started = time.monotonic()
        try:
            self.device = await asyncio.to_thread(devices.select_device, self.settings.device)
            if self.device.type == "cuda":
                self.gpu = devices.GpuWatch(devices.cuda_reader(self.device)).start()
            self.module, self.manifest = await asyncio.to_thread(
                model_store.load_artifact, self.settings.model_path, self.device)
            self._set_phase(Phase.WARMING, f"first inference of model {self.manifest.version}")
            await asyncio.to_thread(model_store.warm_up, self.module, self.manifest, self.device,
                                    Path(self.settings.model_path))
        except (model_store.ArtifactError, devices.DeviceError) as e:
            self._set_phase(Phase.FAILED, str(e))
            return
        m = self.manifest
        # What is loaded now (torch, the app, the model: some 200,000 objects) lives as long as the process.
        # Frozen out of the collector's sight, a full collection walks only the requests' objects: under
        # load one took ~100 ms, every request then in flight waiting, the p99 at saturation.
        gc.collect()
        gc.freeze()
        self.metrics.model.info({"name": m.name, "version": m.version, "sha256": m.sha256,
                                 "device": str(self.device), "torch": torch.__version__})
        if self.phase is Phase.WARMING:  # not draining meanwhile
            self._set_phase(Phase.READY, f"model {m.name} v{m.version} on {self.device}, "
                                         f"loaded in {time.monotonic() - started:.1f} s")
        if self.settings.consul_addr:
            self._tasks.append(asyncio.create_task(self._register()))

    async def _register(self) -> None:
        self.registration = registration.Registration(self.settings, self.manifest)
        threading.Thread(target=self.registration.run, name="consul-registration", daemon=True).start()

    async def drain(self) -> None:
        """Readiness turns 503 first, in-flight work finishes, then the replica leaves Consul."""
        if self.phase is Phase.DRAINING:
            return
        self._set_phase(Phase.DRAINING, "stopping: finishing in-flight requests")
        await asyncio.sleep(self.settings.drain_seconds)  # Consul's check and the gateway notice
        deadline = time.monotonic() + self.settings.drain_timeout
        while (self.in_flight or self.batcher.depth) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.registration is not None:
            await asyncio.to_thread(self.registration.close)  # no re-registration after this

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.follower:
            self.follower.stop()
        if self.gpu:
            self.gpu.stop()
        await self.batcher.stop()
        await self.probes.stop()

    # readiness -------------------------------------------------------------------------------
    def gpu_memory(self) -> GpuMemory | None:
        """The last sample of the GPU's memory (None on CPU, or before the first): never a CUDA call here."""
        memory = self.gpu.latest if self.gpu else None
        if memory is not None:
            self.metrics.gpu_free.set(memory.free_bytes)
            self.metrics.gpu_total.set(memory.total_bytes)
        return memory

    def readiness(self) -> Readiness:
        return readiness(self.phase, self.reason, self.batcher.depth, self.gpu_memory(), self.limits)

    def answer(self, phase: Phase, reason: str, **extra) -> dict:
        version = self.manifest.version if self.manifest else None
        return {"phase": phase.value, "reason": reason, "version": version, **extra}

    def probe_answers(self) -> dict:
        """/health and /ready as [status, body], for the probe server's snapshot."""
        r = self.readiness()
        return {"/health": [liveness_status(self.phase), self.answer(self.phase, self.reason)],
                "/ready": [r.status_code, self.answer(r.phase, r.reason)]}

    # inference -------------------------------------------------------------------------------
    def _infer(self, batch: model_store.Batch) -> torch.Tensor:
        """The batch's outputs (in the batcher's thread). A CUDA error leaves the device unusable: the replica
        turns failed with it (liveness 500, so Swarm replaces it); running out of memory only fails the batch."""
        try:
            with torch.inference_mode():
                return self.module(*(x.to(self.device) for x in batch)).cpu()
        except Exception as e:
            if self.device is not None and self.device.type == "cuda" and devices.is_cuda_error(e):
                self._loop.call_soon_threadsafe(self._set_phase, Phase.FAILED, f"CUDA error at inference: {e}"[:300])
            raise

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference.observe(seconds)

    async def predict(self, inputs: list) -> torch.Tensor:
        """The model's outputs for a request's rows: one item per model input (the manifest's order), its rows
        each flat (row-major, a list of lists or an array); batched along the first dimension."""
        self.metrics.queue_depth.set(self.batcher.depth)
        batch = tuple(torch.as_tensor(rows, dtype=i.torch_dtype).reshape(-1, *i.shape)
                      for rows, i in zip(inputs, self.manifest.inputs))
        return await self.batcher.submit(batch)
