"""Run the production service with its predictions failing (500) for a fraction of /predict requests
once the first FLEET_TEST_ERROR_AFTER have succeeded. Deterministic: exactly RATE of the later ones."""
import os

from fleet_inference import __main__ as service

RATE = float(os.environ.get("FLEET_TEST_ERROR_RATE", "0.3"))
AFTER = int(os.environ.get("FLEET_TEST_ERROR_AFTER", "20"))
_create_app = service.create_app


def create_app(settings):
    app = _create_app(settings)
    replica = app.state.replica
    predict = replica.predict
    seen = {"requests": 0, "failed": 0}

    async def flaky_predict(rows):
        seen["requests"] += 1
        if (seen["requests"] - AFTER) * RATE >= seen["failed"] + 1:
            seen["failed"] += 1
            raise RuntimeError("fleet-test: injected failure")
        return await predict(rows)

    replica.predict = flaky_predict
    return app


service.create_app = create_app
service.main()
