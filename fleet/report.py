"""`fleet history N --report FILE.html|FILE.png`: one rollout on one self-contained page.

From the revision's history record (its plan, timeline, golden figures and verdict) and the stack's
Prometheus (range queries over the rollout's time, per role): the canary's share over time with its
steps, each role's request rate (and fleet's synthetic part), error rate and p50/p99 with the
thresholds they were judged against, then the timeline. Plots by plotly with its JavaScript inlined,
so the page opens with no network; the figures are embedded as JSON too (`#fleet-report-data`). The
page is pure (record and series in, HTML out); writing it, and a PNG of it, is fleet/adapters/browser.py.
"""
import html
import json
import time

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .core.analysis import PREDICTIONS, SCRAPED
from .core.records import Revision
from .core.secrets import redact_text

RATE = "5s"  # the rate window of every series (the stack scrapes every 250 ms)
_PREDICT = SCRAPED + ',service="{s}",' + PREDICTIONS
QUERIES = {  # series -> PromQL over one Swarm service's replicas
    "requests": f"sum(rate(fleet_request_seconds_count{{{_PREDICT}}}[{RATE}]))",
    "synthetic": f'sum(rate(fleet_request_seconds_count{{{_PREDICT},origin="synthetic"}}[{RATE}]))',
    "error_rate": f'(sum(rate(fleet_requests_total{{{_PREDICT},status=~"5.."}}[{RATE}])) or vector(0)) '
                  f"/ sum(rate(fleet_request_seconds_count{{{_PREDICT}}}[{RATE}]))",
    "p50": f"histogram_quantile(0.5, sum by (le) (rate(fleet_request_seconds_bucket{{{_PREDICT}}}[{RATE}])))",
    "p99": f"histogram_quantile(0.99, sum by (le) (rate(fleet_request_seconds_bucket{{{_PREDICT}}}[{RATE}])))",
}
COLOURS = {"stable": "#1f77b4", "canary": "#ff7f0e"}


def query(series: str, service_name: str) -> str:
    return QUERIES[series].replace("{s}", service_name)


def window(record: Revision) -> tuple[float, float, float]:
    """The range the report covers (a little around the rollout) and its step. Pure."""
    start = (record.started_at or record.ended_at or time.time()) - 10
    end = (record.ended_at or time.time()) + 10
    return start, end, max(1.0, round((end - start) / 400, 1))


def collect(prom, record: Revision, stable_name: str, canary_name: str) -> dict:
    """Every series of both roles over the rollout, from Prometheus: {role: {series: [(t, v)]}}."""
    start, end, step = window(record)
    return {role: {series: prom.range(query(series, name), start, end, step) for series in QUERIES}
            for role, name in (("stable", stable_name), ("canary", canary_name))}


def shares(record: Revision) -> list[tuple[float, float]]:
    """The canary's share over time, as steps, from the timeline. Pure."""
    points = [(record.started_at, 0.0)] if record.started_at else []
    promoted = False  # from the promotion on, the new version has every request (its canary's cut is moot)
    for e in record.timeline or []:
        if e["event"] == "share" and not promoted:
            points.append((e["at"], float(e["detail"].split("%")[0])))
        elif e["event"] == "cut" and not promoted:
            points.append((e["at"], 0.0))
        elif e["event"] == "promote":
            promoted = True
            points.append((e["at"], 100.0))
    if record.ended_at and points:
        points.append((record.ended_at, points[-1][1]))
    return points


def figure(record: Revision, data: dict) -> go.Figure:
    plan = record.plan or {}
    thresholds = plan.get("thresholds") or {}
    fig = make_subplots(rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=("canary share (%)", "requests per second (dotted: fleet's synthetic)",
                                        "error rate (5xx share)", "p50 latency (ms)", "p99 latency (ms)"))
    at = _time
    share = shares(record)
    fig.add_trace(go.Scatter(x=[at(t) for t, _ in share], y=[v for _, v in share], mode="lines+markers",
                             line={"shape": "hv", "color": COLOURS["canary"]}, name="share"), row=1, col=1)
    for role in ("stable", "canary"):
        series = data.get(role, {})
        colour = COLOURS[role]
        fig.add_trace(go.Scatter(x=[at(t) for t, _ in series.get("requests", [])],
                                 y=[v for _, v in series.get("requests", [])], name=f"{role} requests/s",
                                 line={"color": colour}), row=2, col=1)
        fig.add_trace(go.Scatter(x=[at(t) for t, _ in series.get("synthetic", [])],
                                 y=[v for _, v in series.get("synthetic", [])], name=f"{role} synthetic/s",
                                 line={"color": colour, "dash": "dot"}), row=2, col=1)
        fig.add_trace(go.Scatter(x=[at(t) for t, _ in series.get("error_rate", [])],
                                 y=[v for _, v in series.get("error_rate", [])], name=f"{role} error rate",
                                 line={"color": colour}), row=3, col=1)
        for row, q in ((4, "p50"), (5, "p99")):
            fig.add_trace(go.Scatter(x=[at(t) for t, _ in series.get(q, [])],
                                     y=[1000 * v for _, v in series.get(q, [])], name=f"{role} {q}",
                                     line={"color": colour}), row=row, col=1)
    if "max_error_rate" in thresholds:
        fig.add_hline(y=thresholds["max_error_rate"], line_dash="dash", line_color="red", row=3, col=1,
                      annotation_text=f"limit {thresholds['max_error_rate']:g}")
    ratio = thresholds.get("max_latency_ratio")
    if ratio:
        for row, q in ((4, "p50"), (5, "p99")):
            stable = data.get("stable", {}).get(q, [])
            fig.add_trace(go.Scatter(x=[at(t) for t, _ in stable], y=[1000 * v * ratio for _, v in stable],
                                     name=f"limit: stable {q} x {ratio:g}", line={"color": "red", "dash": "dash"}),
                          row=row, col=1)
    fig.update_layout(height=1400, width=1100, template="plotly_white", legend={"orientation": "h"},
                      margin={"t": 40, "l": 60, "r": 20, "b": 40})
    return fig


def page(record: Revision, data: dict, stack: str, service: str) -> str:
    """The whole page: header, plots, golden figures, timeline, and the data as JSON. Pure."""
    e = html.escape
    plan = record.plan or {}
    golden = record.golden or {}
    rows = "".join(f"<tr><td>{e(_clock(x['at']))}</td><td>{e(x['event'])}</td><td>{e(redact_text(x['detail']))}</td></tr>"
                   for x in record.timeline or [])
    took = (record.ended_at - record.started_at) if record.ended_at and record.started_at else None
    plots = figure(record, data).to_html(full_html=False, include_plotlyjs=True, div_id="fleet-report-plots")
    embedded = redact_text(json.dumps({"stack": stack, "service": service, "record": record.to_dict(),
                                       "series": data})).replace("</", "<\\/")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fleet: {e(stack)}_{e(service)} revision {record.revision}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1150px}} td{{padding:2px 8px;vertical-align:top}}
.promoted{{color:#2a7}} .rolled_back,.aborted,.superseded{{color:#c33}} table{{border-collapse:collapse}}
tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>{e(stack)}_{e(service)} revision {record.revision}:
<span class="{e(str(record.outcome))}" id="outcome">{e(str(record.outcome))}</span></h1>
<p>{e(str(record.previous_image or ''))} &rarr; <b>{e(str(record.image))}</b>
({e(str(record.cause or 'fleet rollout'))}); {e(_clock(record.started_at))} to
{e(_clock(record.ended_at))}{f', {took:.0f} s' if took is not None else ''}</p>
<p id="verdict">{e(record.reason or '')}</p>
<p>steps {e(str(plan.get('steps')))} of {plan.get('step_duration', '?')} s; limits: error rate
{e(str((plan.get('thresholds') or {}).get('max_error_rate')))}, latency ratio
{e(str((plan.get('thresholds') or {}).get('max_latency_ratio')))}; golden tolerance {plan.get('golden_tolerance')}</p>
<p id="golden">golden gate: {e(('passed: ' if golden.get('passed') else 'failed: ') + golden.get('detail', '')
                              if golden else 'not reached')}</p>
{plots}
<h2>timeline</h2><table id="timeline">{rows}</table>
<script type="application/json" id="fleet-report-data">{embedded}</script>
</body></html>"""


def _time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"
