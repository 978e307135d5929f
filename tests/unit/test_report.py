"""The rollout report's page (fleet/report.py, pure) from a history record and series. The page opened in
real headless Chromium, and real rollouts' reports, are tested in tests/real/test_rollout_visible.py."""
import json
import re

from fleet import report
from tests.kit.helpers import REPORT_DATA, REPORT_RECORD, REPORT_T0

T0, RECORD, DATA = REPORT_T0, REPORT_RECORD, REPORT_DATA


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
