"""The replica's registration in Consul (fleet_inference/registration.py): the weight it follows, and
the tags that put it in the gateway's pools."""
import pytest

from fleet_inference.config import Settings
from fleet_inference.model_store import Manifest
from fleet_inference.registration import parse_weight, service_definition


@pytest.mark.parametrize("raw,expected", [(None, 7), (b"0", 0), (b"300", 255), (b"-4", 0), (b"x", 7)])
def test_weight_zero_is_a_weight(raw, expected):
    assert parse_weight(raw, 7) == expected


@pytest.mark.parametrize("role,weight,live", [("canary", 0, False), ("canary", 5, True), ("stable", 100, True)])
def test_only_replicas_with_a_weight_join_the_gateways_weighted_pool(role, weight, live):
    settings = Settings(role=role, task_id="t1", service_name="inference")
    manifest = Manifest(name="m", version="2", sha256="0" * 64, file="model.pt", input_shape=(8,), num_classes=4, accuracy=0.9)
    tags = service_definition(settings, manifest, "10.0.0.5", weight)["tags"]
    assert role in tags and "v2" in tags and (f"live-{role}" in tags) is live


@pytest.mark.parametrize("task,query", [("t1", "?task=t1"), ("", "")])
def test_the_check_names_the_replicas_task_so_a_reused_address_fails_it(task, query):
    settings = Settings(role="stable", task_id=task, service_name="inference")
    manifest = Manifest(name="m", version="2", sha256="0" * 64, file="model.pt", input_shape=(8,), num_classes=4, accuracy=0.9)
    check = service_definition(settings, manifest, "10.0.0.5")["check"]
    assert check["http"] == f"http://10.0.0.5:{settings.admin_port}/ready{query}"
