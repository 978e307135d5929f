"""Live configuration: the batching, admission and GPU-watermark knobs, changed without a restart.

`fleet config set max_batch=8` writes a JSON document to Consul KV at `fleet/config/<service>`; each
replica follows that key with a blocking query and applies a change at once. A knob the document does
not name keeps the environment's setting (FLEET_MAX_BATCH, ...). A bad value written by hand (fleet
refuses them itself) is ignored with a log line, and that knob keeps its value.

KNOBS, the one table of what may be tuned and its bounds, is fleet_protocol's, which fleet uses too.
"""
import json
import logging
import threading

import tenacity

from fleet_protocol import KNOBS, check_knob as check, config_key

from .config import Settings

log = logging.getLogger("fleet_inference.tuning")

def parse(raw: bytes | None) -> tuple[dict, list[str]]:
    """The valid knobs of a KV document, and what was wrong with the rest. Pure."""
    if not raw:
        return {}, []
    try:
        doc = json.loads(raw)
    except ValueError as e:
        return {}, [f"not JSON ({e})"]
    if not isinstance(doc, dict):
        return {}, ["not a JSON object"]
    values, problems = {}, []
    for name, value in doc.items():
        try:
            values[name] = check(name, value)
        except ValueError as e:
            problems.append(str(e))
    return values, problems


def defaults(settings: Settings) -> dict:
    """The knobs as the environment set them."""
    return {name: getattr(settings, name) for name in KNOBS}


class Follower:
    """Follows `fleet/config/<service>` with blocking queries in a thread of its own and calls
    `apply(values)` (values: every knob, the document's over the environment's) on each change."""

    def __init__(self, settings: Settings, client_factory, apply, wait: str = "30s"):
        self.settings, self.client_factory, self.apply, self.wait = settings, client_factory, apply, wait
        self._stopped = threading.Event()
        self._last: dict | None = None

    def run(self) -> None:
        c, index = self.client_factory(self.settings), None
        retrying = tenacity.Retrying(wait=tenacity.wait_exponential(multiplier=0.2, max=5), sleep=self._stopped.wait,
                                     retry=tenacity.retry_if_exception(lambda e: not self._stopped.is_set()),
                                     before_sleep=tenacity.before_sleep_log(log, logging.WARNING), reraise=True)
        try:
            while not self._stopped.is_set():
                for attempt in retrying:
                    with attempt:
                        new_index, item = c.kv.get(config_key(self.settings.service_name), index=index, wait=self.wait)
                # Consul's index can go backwards (a restart without data): then start over.
                index = None if index is not None and new_index < index else new_index
                self.changed(item["Value"] if item else None)
        except Exception as e:
            if not self._stopped.is_set():
                log.error("following %s stopped: %r", config_key(self.settings.service_name), e)

    def changed(self, raw: bytes | None) -> None:
        values, problems = parse(raw)
        for p in problems:
            log.warning("ignoring %s: %s", config_key(self.settings.service_name), p)
        effective = {**defaults(self.settings), **values}
        if effective != self._last:
            log.info("configuration: %s", effective)
            self._last = effective
            self.apply(effective)

    def stop(self) -> None:
        self._stopped.set()
