import pytest

from fleet_inference.phases import GpuMemory, Limits, Phase, liveness_status, readiness

LIMITS = Limits(max_queue=10, gpu_min_free_bytes=512 << 20, gpu_max_used_pct=95.0)
GIB = 1 << 30

CASES = [
    # id, phase, queue, gpu, expected phase, expected status
    ("loading-is-503", Phase.LOADING, 0, None, Phase.LOADING, 503),
    ("warming-is-503", Phase.WARMING, 0, None, Phase.WARMING, 503),
    ("ready-on-cpu-is-200", Phase.READY, 0, None, Phase.READY, 200),
    ("failed-is-503", Phase.FAILED, 0, None, Phase.FAILED, 503),
    ("draining-is-503-even-if-idle", Phase.DRAINING, 0, None, Phase.DRAINING, 503),
    ("queue-at-bound-is-ready", Phase.READY, 10, None, Phase.READY, 200),
    ("queue-over-bound-is-degraded", Phase.READY, 11, None, Phase.DEGRADED, 429),
    ("gpu-plenty-free-is-ready", Phase.READY, 0, GpuMemory(40 * GIB, 80 * GIB), Phase.READY, 200),
    ("gpu-under-watermark-is-degraded", Phase.READY, 0, GpuMemory(256 << 20, 8 * GIB), Phase.DEGRADED, 429),
    ("gpu-over-95pct-used-is-degraded", Phase.READY, 0, GpuMemory(2 * GIB, 80 * GIB), Phase.DEGRADED, 429),
    ("loading-with-low-gpu-stays-loading", Phase.LOADING, 0, GpuMemory(0, 8 * GIB), Phase.LOADING, 503),
]


@pytest.mark.parametrize("phase,queue,gpu,want_phase,want_status", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_readiness_truth_table(phase, queue, gpu, want_phase, want_status):
    r = readiness(phase, "why", queue, gpu, LIMITS)
    assert (r.phase, r.status_code) == (want_phase, want_status)
    assert r.reason  # the body always names a reason


@pytest.mark.parametrize("phase", list(Phase))
def test_liveness_is_500_only_when_failed(phase):
    assert liveness_status(phase) == (500 if phase is Phase.FAILED else 200)


def test_degraded_reason_names_the_numbers():
    r = readiness(Phase.READY, "", 0, GpuMemory(100 << 20, 8 * GIB), LIMITS)
    assert "100 MiB" in r.reason and "512 MiB" in r.reason
