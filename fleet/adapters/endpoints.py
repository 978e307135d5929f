"""One published port reached on whichever live node answers: the URLs come from Swarm (a task of the
service on a ready node), the current one is used until it does not answer, then the next, and the list
is read again, so a rollout goes on through another node's gateway (or a rescheduled Prometheus) when
the node it used is lost."""
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

class Unanswered(Exception):
    """No URL answered (the message names each one tried and why)."""


FORGET_FAILED = 30.0  # seconds a URL that did not answer is tried last


class Endpoints:
    def __init__(self, find: Callable[[], list[str]]):
        self.find = find  # the URLs in order of preference, read from Swarm (or fixed, given by the user)
        self._urls: list[str] = []
        self._failed: dict[str, float] = {}  # url -> monotonic time it last did not answer
        self._lock = threading.Lock()

    def urls(self) -> list[str]:
        """The URLs to try, in order: the current first, those that failed recently last."""
        with self._lock:
            if not self._urls:
                self._urls = list(self.find())
            now = time.monotonic()
            return sorted(self._urls, key=lambda u: now - self._failed.get(u, -1e9) < FORGET_FAILED)

    def failed(self, url: str) -> None:
        """`url` did not answer: move on, and read the list again (a node may have gone, a task moved)."""
        with self._lock:
            self._failed[url] = time.monotonic()
            try:
                found = list(self.find())
            except Exception:  # Swarm not answering: keep what we had
                found = []
            self._urls = found or self._urls

    def first(self, request: Callable[[str], T], attempts: int) -> T:
        """`request(url)` on the first of at most `attempts` URLs that answers; a URL whose connection fails
        (httpx.TransportError) is marked failed and the next is tried. Unanswered, naming each, when none did."""
        errors = []
        for url in self.urls()[:attempts]:
            try:
                return request(url)
            except httpx.TransportError as e:
                self.failed(url)
                errors.append(f"{url}: {e!r}")
        raise Unanswered("; ".join(errors) or "none found")

    @property
    def current(self) -> str:
        urls = self.urls()
        return urls[0] if urls else ""


def fixed(urls: str) -> Endpoints:
    """Endpoints given by hand: one URL or several, comma-separated."""
    listed = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
    return Endpoints(lambda: listed)
