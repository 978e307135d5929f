"""Run the production service with a slower model load (a test image, not a production switch)."""
import os
import time

from fleet_inference import __main__ as service, model_store

_load = model_store.load_artifact


def slow_load(*args, **kwargs):
    time.sleep(float(os.environ.get("FLEET_TEST_LOAD_SECONDS", "60")))
    return _load(*args, **kwargs)


model_store.load_artifact = slow_load
service.main()
