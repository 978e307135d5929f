"""Secrets kept out of what fleet writes. Pure.

Gate and webhook URLs often carry a credential: `https://user:password@host/...` or a query value such as
`?token=...`. Wherever fleet writes a URL (stderr, `--json`, the timeline, history and the state in
Consul KV, webhook events, reports), it writes `redact(url)`: the user info and the values of secret-named
query keys become `REDACTED`, the rest stays readable. The real URL lives only in the rollout's memory;
`restore` finds it again among the URLs an operator gives a resumed rollout. A chat webhook's URL (written
`slack:URL`, `teams:URL`, `discord:URL`, or on Slack's and Discord's webhook hosts) is a credential in its
path: the path goes too.
"""
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "REDACTED"
SECRET_KEYS = ("token", "key", "secret", "sig", "signature", "password", "passwd", "pwd", "auth", "credential",
               "session", "code")
CHATS = ("slack", "teams", "discord")  # webhooks written `slack:URL`: that service's format (fleet/core/gates.py)
CHAT_PREFIXES = tuple(f"{chat}:" for chat in CHATS)
URL = re.compile(rf"(?:(?:{'|'.join(CHATS)}):)?https?://[^\s'\"<>|]+")  # | ends one: Slack's <URL|text>
CHAT_HOSTS = ("hooks.slack.com", "discord.com", "discordapp.com")  # their webhook URLs' paths are credentials


def _secret(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(word in k for word in SECRET_KEYS)


def redact(url: str) -> str:
    """`url` with its user info and secret-named query values masked (and a chat webhook's path). Pure; a text
    that is no http(s) URL is returned as it is."""
    prefix = next((p for p in CHAT_PREFIXES if url.startswith(p)), "")
    if prefix:
        return prefix + _redact(url[len(prefix):], chat=True)
    return _redact(url, chat=False)


def _redact(url: str, chat: bool) -> str:
    if not url.startswith(("http://", "https://")):
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL that parses: nothing of it is kept but its scheme
        return url.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        netloc = f"{MASK}@" + (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_secret(k) for k, _ in pairs):
        query = urlencode([(k, MASK if _secret(k) else v) for k, v in pairs], safe=MASK)
    path = f"/{MASK}" if (chat or host in CHAT_HOSTS) and parts.path.strip("/") else parts.path
    return urlunsplit((parts.scheme, netloc, path, query, MASK if parts.fragment else ""))


def redact_text(text: str) -> str:
    """Every http(s) URL in `text` redacted (an error message that quotes the URL it failed on). Pure."""
    return URL.sub(lambda m: redact(m.group(0)), text)


def redacted(specs: Iterable[str]) -> tuple[str, ...]:
    return tuple(redact(s) for s in specs)


def restore(written: str, given: Iterable[str]) -> str | None:
    """The URL among `given` whose redacted form is `written` (what a record kept), or `written` itself when
    it hid nothing; None when it hid a secret and none of `given` matches. Pure."""
    if redact(written) == written and MASK not in written:
        return written
    for url in given:
        if redact(url) == written:
            return url
    return None
