"""Live configuration knobs (fleet_inference/tuning.py, fleet/tuning.py) and the torch thread count."""
import json

import pytest

import fleet_protocol
from fleet import tuning as fleet_config
from fleet_inference import tuning
from fleet_inference.config import Settings, cpu_quota, torch_threads


def test_fleet_and_the_replica_know_the_same_knobs_and_bounds():
    assert fleet_config.KNOBS is tuning.KNOBS is fleet_protocol.KNOBS  # one table, in both


@pytest.mark.parametrize("name,value,expected", [
    ("max_batch", "8", 8), ("max_batch", 8, 8), ("max_wait_ms", "0.5", 0.5), ("gpu_max_used_pct", 90, 90.0)])
def test_good_values_are_taken_as_their_type(name, value, expected):
    assert tuning.check(name, value) == expected


@pytest.mark.parametrize("name,value,says", [
    ("max_batch", "lots", "not a whole number"), ("max_batch", "2.5", "not a whole number"),
    ("max_batch", 0, "between 1 and 1024"), ("max_wait_ms", "nan", "between"), ("gpu_max_used_pct", 101, "between"),
    ("max_batch", True, "not a number"), ("batch", 8, "unknown knob 'batch'")])
def test_bad_values_are_refused_naming_the_problem(name, value, says):
    with pytest.raises(ValueError, match=says):
        tuning.check(name, value)


def test_a_document_with_a_bad_knob_keeps_the_good_ones():
    values, problems = tuning.parse(json.dumps({"max_batch": 4, "max_queue": "lots"}).encode())
    assert values == {"max_batch": 4} and problems == ["max_queue='lots': not a whole number"]
    assert tuning.parse(b"[1]") == ({}, ["not a JSON object"])
    assert tuning.parse(None) == ({}, [])


def test_the_follower_applies_the_document_over_the_environment_and_falls_back_when_unset():
    applied = []
    f = tuning.Follower(Settings(max_batch=32), None, applied.append)
    f.changed(b'{"max_batch": 2}')
    f.changed(b'{"max_batch": 2, "max_queue": "lots"}')  # nothing valid changed: not applied again
    f.changed(None)
    assert [a["max_batch"] for a in applied] == [2, 32]
    assert applied[0]["max_queue"] == Settings().max_queue


@pytest.mark.parametrize("cpu_max,v1_quota,v1_period,quota", [
    ("max 100000\n", None, None, None), ("150000 100000\n", None, None, 1.5), (None, "-1", "100000", None),
    (None, "200000", "100000", 2.0), (None, None, None, None), ("garbage", None, None, None)])
def test_cpu_quota_from_cgroup_v2_or_v1(cpu_max, v1_quota, v1_period, quota):
    assert cpu_quota(cpu_max, v1_quota, v1_period) == quota


@pytest.mark.parametrize("cores,quota,threads", [(16, None, 15), (16, 1.5, 1), (16, 4.0, 3), (2, 8.0, 1), (1, None, 1)])
def test_torch_threads_follow_the_quota_not_the_hosts_cores(cores, quota, threads):
    assert torch_threads(cores, quota) == threads
