"""Run a replica: `python -m fleet_inference`. SIGTERM drains before uvicorn stops accepting."""
import asyncio
import logging
import signal
import sys

import uvicorn

from .app import create_app
from .config import Settings


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM, drain (readiness 503, finish in-flight, deregister), then exit."""

    draining = False

    def handle_exit(self, sig, frame):
        if sig == signal.SIGTERM and not self.draining:
            self.draining = True
            asyncio.get_event_loop().create_task(self._drain_then_exit())
            return
        super().handle_exit(sig, frame)

    async def _drain_then_exit(self):
        try:
            await self.config.app.state.replica.drain()
        finally:
            self.should_exit = True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Hand the GIL back to the event loop sooner when the inference thread holds it, so /health and
    # /ready keep answering fast while /predict saturates the CPU.
    sys.setswitchinterval(0.001)
    settings = Settings.from_env()
    app = create_app(settings)
    config = uvicorn.Config(app, host="0.0.0.0", port=settings.port, access_log=False, log_level="info",
                            timeout_graceful_shutdown=settings.drain_timeout)
    asyncio.run(DrainingServer(config).serve())


if __name__ == "__main__":
    main()
