"""Prometheus metrics of one replica, in a registry of its own (one per app, so tests can build many)."""
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info

from .phases import Phase

# 1-1.5-2-3-5-7 per decade: neighbours at most 1.67x apart, so a quantile a whole bucket above another is at
# least 1.33x it (fleet judges latency on what the buckets prove, fleet/core/analysis.py)
LATENCY_BUCKETS = (0.001, 0.0015, 0.002, 0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07,
                   0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("fleet_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        # origin: "synthetic" for fleet's own requests (header X-Fleet-Origin), else "organic"
        self.latency = Histogram("fleet_request_seconds", "HTTP request latency by route and origin",
                                 ["route", "origin"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("fleet_batch_size", "rows per inference batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.inference = Histogram("fleet_inference_seconds", "time per inference batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.dropped_rows = Counter("fleet_dropped_rows", "rows dropped before inference: their client went away",
                                    registry=r)
        self.predictions = Counter("fleet_predictions", "rows answered, by predicted class and origin (what fleet "
                                   "compares between a canary and the stable)", ["class", "origin"], registry=r)
        self.non_finite = Counter("fleet_non_finite_outputs", "requests the model answered with NaN or infinity "
                                  "(answered 500)", registry=r)
        self.queue_depth = Gauge("fleet_queue_depth", "rows waiting for a batch", registry=r)
        self.in_flight = Gauge("fleet_in_flight_requests", "predict requests being served", registry=r)
        self.phase = Enum("fleet_phase", "replica phase", states=[p.value for p in Phase], registry=r)
        self.model = Info("fleet_model", "model served", registry=r)
        self.gpu_free = Gauge("fleet_gpu_memory_free_bytes", "free GPU memory (CUDA only)", registry=r)
        self.gpu_total = Gauge("fleet_gpu_memory_total_bytes", "total GPU memory (CUDA only)", registry=r)
