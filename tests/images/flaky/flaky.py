"""Run the production service with its predictions going bad once it has served a while: a fraction
(FLEET_TEST_ERROR_RATE) of /predict requests fail (500) once the first FLEET_TEST_ERROR_AFTER have
succeeded and FLEET_TEST_ERROR_AFTER_SECONDS have passed since the first; every prediction takes
FLEET_TEST_LATENCY_MS longer from then on. Deterministic: exactly RATE of the later ones fail."""
import asyncio
import os
import time

from fleet_inference import __main__ as service

RATE = float(os.environ.get("FLEET_TEST_ERROR_RATE", "0.3"))
AFTER = int(os.environ.get("FLEET_TEST_ERROR_AFTER", "20"))
AFTER_SECONDS = float(os.environ.get("FLEET_TEST_ERROR_AFTER_SECONDS", "0"))
LATENCY = float(os.environ.get("FLEET_TEST_LATENCY_MS", "0")) / 1000
_create_app = service.create_app


def create_app(settings):
    app = _create_app(settings)
    replica = app.state.replica
    predict = replica.predict
    seen = {"requests": 0, "failed": 0, "first": None}

    async def flaky_predict(rows):
        seen["requests"] += 1
        seen["first"] = seen["first"] or time.monotonic()
        if time.monotonic() - seen["first"] < AFTER_SECONDS:
            return await predict(rows)
        if LATENCY:
            await asyncio.sleep(LATENCY)
        if (seen["requests"] - AFTER) * RATE >= seen["failed"] + 1:
            seen["failed"] += 1
            raise RuntimeError("fleet-test: injected failure")
        return await predict(rows)

    replica.predict = flaky_predict
    return app


service.create_app = create_app
service.main()
