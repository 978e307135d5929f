"""The container's HEALTHCHECK command: healthy when the probe server's /ready answers 200 (ready) or 429
(degraded).

Docker runs it every interval in every replica, so it is kept cheap: one HTTP/1.0 request over a plain
socket (urllib's imports alone cost three times the interpreter's start, CPU that a node starting
replicas lacks). It prints the readiness body, which Docker keeps in the health log: `docker inspect`
and `fleet deploy` show the phase and reason.
"""
import os
import socket
import sys

HEALTHY = (200, 429)


def parse(response: bytes) -> tuple[int, str]:
    """An HTTP response's status code and body. Pure."""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP response: {head[:80]!r}")
    return int(status_line[1]), body.decode(errors="replace")


def ask(port: int, timeout: float) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return parse(b"".join(chunks))


def main() -> int:
    port = int(os.environ.get("FLEET_ADMIN_PORT", "8001"))  # the probe server
    try:
        status, body = ask(port, float(os.environ.get("FLEET_HEALTHCHECK_TIMEOUT", "2")))
    except (OSError, ValueError) as e:
        print(f"no answer from http://127.0.0.1:{port}/ready: {e}")
        return 1
    print(body)
    return 0 if status in HEALTHY else 1


if __name__ == "__main__":
    sys.exit(main())
