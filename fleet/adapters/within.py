"""One HTTP request with a total deadline: the whole answer, headers and body, read within `seconds` or
httpx.TimeoutException (a TransportError, as a connection that failed). httpx's own timeouts are per read:
a server sending a byte at a time held a gate's ask, a registry's manifest or a Prometheus query for ever.
Every call of fleet's to a gate, a webhook, a registry or Prometheus goes through here.

The requests run on one event loop, on a thread of its own, with one client per TLS setting, made once a
process: a loop and a client a request cost 5 ms of CPU each, and a rollout asks Prometheus several times
a second. The caller's thread waits for its answer; a request past its deadline is cancelled on the loop
(its connection closed), so nothing of it outlives the call."""
import asyncio
import functools
import ssl
import threading
import time

import httpx

_LOCK = threading.Lock()


def request_within(method: str, url: str, seconds: float, *, trust_env: bool = True, verify=True,
                   **kwargs) -> httpx.Response:
    """`method url` (httpx.AsyncClient.request's kwargs: params, headers, content, auth, follow_redirects)
    answered whole within `seconds`; the response is read, usable on any thread."""
    deadline = time.monotonic() + seconds
    if verify is True:
        verify = _context(trust_env)  # made once a process, inside the first call's deadline
    loop = _loop()
    client = _client(trust_env, verify)

    async def send() -> httpx.Response:
        return await asyncio.wait_for(client.request(method, url, timeout=seconds, **kwargs),
                                      max(0.0, deadline - time.monotonic()))
    try:
        return asyncio.run_coroutine_threadsafe(send(), loop).result()
    except TimeoutError:  # asyncio's is the builtin since Python 3.11
        raise httpx.TimeoutException(f"no whole answer within {seconds:g}s") from None


@functools.cache
def _loop() -> asyncio.AbstractEventLoop:
    """The event loop every request runs on, on a daemon thread (it ends with the process)."""
    with _LOCK:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="fleet-http", daemon=True).start()
        return loop


def _client(trust_env: bool, verify) -> httpx.AsyncClient:
    """The client for one TLS setting (a context, a CA file, or False), made once; used on the loop only."""
    key = (trust_env, id(verify) if isinstance(verify, ssl.SSLContext) else verify)
    with _LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = (httpx.AsyncClient(trust_env=trust_env, verify=verify), verify)  # verify kept alive
        return _CLIENTS[key][0]


_CLIENTS: dict = {}


@functools.cache
def _context(trust_env: bool) -> ssl.SSLContext:
    """The default TLS context, made once: each client would otherwise load the CA bundle again (0.8 s a
    client on a busy 2-core machine, past a webhook's whole deadline)."""
    return httpx.create_ssl_context(trust_env=trust_env)
