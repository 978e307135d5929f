"""The container's HEALTHCHECK command (fleet_inference/healthcheck.py) against a real HTTP server on
127.0.0.1: healthy on 200 and 429, unhealthy on anything else and on no answer, the body printed."""
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleet_inference import healthcheck
from tests.kit.helpers import Quiet, local_server


def serve(status: int, body: bytes) -> ThreadingHTTPServer:
    class Handler(Quiet):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return local_server(Handler)


@pytest.mark.parametrize("status,healthy", [(200, True), (429, True), (503, False), (500, False)])
def test_healthy_means_ready_or_degraded_and_the_body_is_printed(status, healthy, monkeypatch, capsys):
    body = b'{"phase":"x","reason":"r"}'
    server = serve(status, body)
    try:
        monkeypatch.setenv("FLEET_ADMIN_PORT", str(server.server_address[1]))
        assert healthcheck.main() == (0 if healthy else 1)
    finally:
        server.shutdown()
    assert capsys.readouterr().out.strip() == body.decode()


def test_no_answer_is_unhealthy_and_says_so(monkeypatch, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    monkeypatch.setenv("FLEET_ADMIN_PORT", str(port))
    assert healthcheck.main() == 1
    out = capsys.readouterr().out
    assert f"no answer from http://127.0.0.1:{port}/ready" in out and "refused" in out


@pytest.mark.parametrize("raw", [b"", b"garbage", b"HTTP/1.0 abc OK\r\n\r\n"])
def test_what_is_not_http_is_refused(raw):
    with pytest.raises(ValueError, match="not an HTTP response"):
        healthcheck.parse(raw)


def test_parse_splits_status_and_body():
    assert healthcheck.parse(b"HTTP/1.0 429 Too Many\r\nA: b\r\n\r\n{\"phase\":\"degraded\"}") == (
        429, '{"phase":"degraded"}')
