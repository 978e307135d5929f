"""One HTTP request with a total deadline: the whole answer, headers and body, read within `seconds` or
httpx.TimeoutException (a TransportError, as a connection that failed). httpx's own timeouts are per read:
a server sending a byte at a time held a gate's ask, a registry's manifest or a Prometheus query for ever.
Every call of fleet's to a gate, a webhook, a registry or Prometheus goes through here."""
import asyncio
import functools
import ssl
import time

import httpx


def request_within(method: str, url: str, seconds: float, *, trust_env: bool = True, verify=True,
                   **kwargs) -> httpx.Response:
    """`method url` (httpx.AsyncClient.request's kwargs: params, headers, content, auth) answered whole
    within `seconds`; the response is read, usable after the client is closed."""
    deadline = time.monotonic() + seconds
    if verify is True:
        verify = _context(trust_env)  # made once a process, inside the first call's deadline

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(timeout=seconds, trust_env=trust_env, verify=verify) as client:
            return await client.request(method, url, **kwargs)
    try:
        return asyncio.run(asyncio.wait_for(send(), max(0.0, deadline - time.monotonic())))
    except TimeoutError:  # asyncio's is the builtin since Python 3.11
        raise httpx.TimeoutException(f"no whole answer within {seconds:g}s") from None


@functools.cache
def _context(trust_env: bool) -> ssl.SSLContext:
    """The default TLS context, made once: each client would otherwise load the CA bundle again (0.8 s a
    client on a busy 2-core machine, past a webhook's whole deadline)."""
    return httpx.create_ssl_context(trust_env=trust_env)
