"""The rollout report (fleet/report.py): the page from a history record and series, opened in real
headless Chromium with no network (the DOM it draws has the plotted series), and its PNG.
The real rollouts' reports are tested in tests/real/test_rollout_visible.py."""
import json
import re
import struct
import subprocess
import zlib

from fleet import report
from fleet.adapters import browser

T0 = 1_700_000_000.0
RECORD = {"revision": 5, "image": "fleet/inference:3", "previous_image": "fleet/inference:2", "outcome": "promoted",
          "reason": "all steps passed", "cause": "fleet rollout", "started_at": T0, "ended_at": T0 + 100,
          "plan": {"steps": [10, 50], "step_duration": 30, "golden_tolerance": 0.01,
                   "thresholds": {"max_error_rate": 0.01, "max_latency_ratio": 1.5}},
          "golden": {"passed": True, "detail": "accuracy 0.97 vs 0.97 <script>"},
          "timeline": [{"at": T0 + 10, "event": "share", "detail": "10% (weights stable 9, canary 1)"},
                       {"at": T0 + 40, "event": "share", "detail": "50% (weights stable 1, canary 1)"},
                       {"at": T0 + 70, "event": "promote", "detail": "updating the stable service"},
                       {"at": T0 + 90, "event": "cut", "detail": "promoted"}]}
DATA = {role: {"requests": [(T0 + i, 10.0 + i % 3) for i in range(0, 100, 2)],
               "synthetic": [(T0 + i, 1.0) for i in range(10, 60, 2)],
               "error_rate": [(T0 + i, 0.0) for i in range(0, 100, 2)],
               "p50": [(T0 + i, 0.004) for i in range(0, 100, 2)],
               "p99": [(T0 + i, 0.012) for i in range(0, 100, 2)]} for role in ("stable", "canary")}


def test_shares_follow_the_timeline():
    assert report.shares(RECORD) == [(T0, 0.0), (T0 + 10, 10.0), (T0 + 40, 50.0), (T0 + 70, 100.0), (T0 + 100, 100.0)]


def test_queries_name_the_role_and_the_window():
    q = report.query("p99", "fleet_inference-canary")
    assert 'service="fleet_inference-canary"' in q and "histogram_quantile(0.99" in q and "{s}" not in q


def test_the_page_is_self_contained_escaped_and_carries_its_data():
    text = report.page(RECORD, DATA, "fleet", "inference")
    assert not re.search(r"""<script[^>]+src=|<link[^>]+href=["']?https?:""", text), "nothing fetched from a network"
    assert "&lt;script&gt;" in text
    embedded = json.loads(re.search(r'id="fleet-report-data">(.*?)</script>', text, re.S).group(1))
    assert embedded["record"]["revision"] == 5 and len(embedded["series"]["canary"]["requests"]) == 50


def test_chromium_draws_every_plot_with_no_network(tmp_path):
    page = tmp_path / "r.html"
    browser.write(page, report.page(RECORD, DATA, "fleet", "inference"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    lines = re.findall(r'<path class="js-line" d="M([^"]+)"', dom)
    # share + per role (requests, synthetic, error rate, p50, p99) + the latency limits
    drawn = [d for d in lines if re.search("[LHV]", d)]  # more than one point: a line was drawn
    assert len(drawn) >= 1 + 2 * 5 + 2, lines
    assert 'id="outcome">promoted<' in dom


def test_the_png_is_the_page_as_chromium_draws_it(tmp_path):
    png = tmp_path / "r.png"
    browser.write(png, report.page(RECORD, DATA, "fleet", "inference"))
    width, height, pixels = _decode(png.read_bytes())
    assert (width, height) == (1200, 1900)
    assert len(set(pixels)) > 20, "more than a blank page: plotted lines in several colours"


def _decode(data: bytes) -> tuple[int, int, list]:
    """Width, height and the RGB(A) rows' distinct byte triples of a PNG (no library needed to read one)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    return width, height, [raw[i:i + 3] for i in range(0, len(raw), 997)]
