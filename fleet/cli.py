"""fleet's command line: parse, call a use case, print. Exit codes: 0 done; 1 failed and restored;
2 bad input, nothing changed; 3 Docker or Consul unreachable, nothing changed."""
import json
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import typer
from fleet_protocol import config_key
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import checkout, controller, package, stackfile, tuning as live_config
from .adapters.builder import Builder
from .adapters.consul import Catalog
from .adapters.swarm import Swarm
from .connect import connect, consul_of, engine
from .core import durations, policy, view
from .core.secrets import redact_text
from .core.convergence import State
from .core.rollout import Phase, Rollout
from .deploy import deploy as run_deploy, parse_images, routing_mesh_available, swarm_facts
from .errors import BadInput, FleetError, OperationFailed, TimedOut, Unreachable
from .status import follow_rollout, status as read_status, watch_rollouts

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

STACK = typer.Option("fleet", "--stack", help="stack name")
JSON = typer.Option(False, "--json", help="one JSON document on stdout, nothing else there")
CONSUL = typer.Option(None, "--consul", envvar="CONSUL_HTTP_ADDR",
                      help="Consul HTTP address [default: the stack's own Consul, on the node it runs on]")
SERVICE = typer.Option("inference", "--service", help="the stack's service to roll out")
BASE_IMAGE = "fleet/inference:base"  # the root Dockerfile's image, which scripts/images.sh builds
FILES = typer.Option([Path("docker-stack.yml")], "-c", "--compose-file", help="stack file(s), merged in order")


@app.callback()
def main() -> None:
    """fleet deploys a PyTorch inference service to Docker Swarm and rolls out new versions of it safely."""
    said = checkout.apply()  # a checkout where `make demo` ran: its Consul CA and token when none is set
    if said:
        err.print(said, highlight=False, markup=False)


def emit(doc: dict, flush: bool = False) -> None:
    """The one JSON document of --json on stdout, every URL in it redacted (fleet/core/secrets.py)."""
    print(redact_text(json.dumps(doc)), flush=flush)


def fail(e: FleetError, as_json: bool) -> None:
    if as_json:
        doc = {"ok": False, "exit_code": e.exit_code, "error": str(e)}
        if isinstance(e.result, controller.Result):
            doc.update(result_doc(e.result))
        emit(doc)
    err.print(f"[bold red]fleet:[/] {redact_text(str(e))}", markup=True, highlight=False)
    raise typer.Exit(e.exit_code)


@contextmanager
def failing(as_json: bool):
    """Run a command's body; a FleetError ends it as the contract says (fail: its exit code, its message)."""
    try:
        yield
    except FleetError as e:
        fail(e, as_json)


def progress_table(verdicts) -> Table:
    table = Table("service", "state", "running", "why")
    colour = {State.CONVERGED: "green", State.PROGRESSING: "yellow", State.FAILED: "red"}
    for name, v in verdicts.items():
        table.add_row(name, f"[{colour[v.state]}]{v.state.value}[/]", f"{v.running}/{v.desired}", v.reason)
    return table


@app.command()
def lint(files: list[Path] = FILES, as_json: bool = JSON):
    """Check a stack file for what would make rollouts unsafe. Exit 2 on errors."""
    with failing(as_json):
        facts = swarm_facts()  # read as `fleet deploy` reads it: FLEET_CONSUL_SERVERS from the managers when unset
        findings = stackfile.lint(stackfile.load(files, managers=facts["managers"]),
                                  routing_mesh=routing_mesh_available(), **facts)
    errors = [f for f in findings if f.severity is stackfile.Severity.ERROR]
    if as_json:
        emit({"ok": not errors, "findings": [
            {"severity": f.severity.value, "service": f.service, "key": f.key, "message": f.message}
            for f in findings]})
    else:
        for f in findings:
            err.print(f, style="red" if f.severity is stackfile.Severity.ERROR else "yellow", highlight=False)
        err.print(f"{len(errors)} error(s), {len(findings) - len(errors)} warning(s)")
    raise typer.Exit(2 if errors else 0)


@app.command()
def build(model_dir: Path = typer.Argument(..., help="the model package: weights, manifest.json, golden set"),
          tag: str = typer.Option(..., "--tag", "-t", help="the image to make, e.g. registry:5000/digits:2"),
          base: str = typer.Option(BASE_IMAGE, "--base", envvar="FLEET_BASE_IMAGE",
                                   help="the inference service's image without a model"),
          push: bool = typer.Option(False, "--push", help="push the image to its registry once built"),
          as_json: bool = JSON):
    """Build a model package into an image fleet can deploy and roll out: the package on the service's
    base image, with the labels fleet reads, checked against its weights inside the image before the tag
    is given. Exit 2, no image made, when the package is wrong."""
    with failing(as_json):
        pkg = package.read_package(model_dir)
        builder = Builder()
        doc = builder.build(pkg, base, tag)
        if push:
            doc["digest"] = builder.push(tag)
    if as_json:
        emit({"ok": True, **doc})
    else:
        check = doc["check"]
        golden = (f"golden accuracy {check['golden_accuracy']:.4f}" if "golden_accuracy" in check
                  else f"golden outputs within {check['golden_max_difference']:g}")
        inputs = inputs_text(check)
        err.print(f"built {tag}: model {check['name']} version {check['version']}, input {inputs}, "
                  f"output {check['output']} {check['output_shape']}, {golden} on {check['golden_rows']} rows"
                  + (f"; pushed as {doc['digest']}" if push else ""), highlight=False)


def inputs_text(check: dict) -> str:
    """The model's inputs as the image's check reported them; a base image older than models of several
    inputs reports only `input_shape` (and `input_dtype`)."""
    if "inputs" in check:
        return ", ".join(f"{i['name']} {i['shape']} {i['datatype']}" for i in check["inputs"])
    return f"{check.get('input_shape')} {check.get('input_dtype', 'FP32')}"


@app.command()
def deploy(files: list[Path] = FILES, stack: str = STACK,
           image: list[str] = typer.Option([], "--image", help="SERVICE=IMAGE, overrides the file's image"),
           timeout: str = typer.Option("10m", "--timeout", help="deadline for convergence, e.g. 90s or 10m"),
           replace_promoted: bool = typer.Option(False, "--replace-promoted",
                                                 help="let the file's image replace one a rollout promoted since "
                                                      "(through a canary where the policy says so)"),
           consul: str = CONSUL, as_json: bool = JSON):
    """Deploy the stack file: a governed service's container change runs as a canary, the rest through
    Swarm; wait until everything has converged and is healthy, or say why not."""
    with failing(as_json):
        seconds = _duration("--timeout", timeout)
        images = parse_images(image)
        live = Live(console=err, transient=False) if err.is_terminal and not as_json else None
        last: dict = {}

        def progress(verdicts):
            if live:
                live.update(progress_table(verdicts))
            elif not as_json:
                for name, v in verdicts.items():
                    line = f"{name}: {v.state.value}: {v.reason}"
                    if last.get(name) != line:
                        err.print(line, highlight=False)
                        last[name] = line

        def rollout_progress(r):
            if live and live.is_started:
                live.stop()
            show_progress(as_json)(r)

        if live:
            live.start()
        try:
            result = run_deploy(files, stack, images, seconds, consul, on_progress=progress,
                                replace_promoted=replace_promoted, on_rollout=rollout_progress,
                                on_plan=None if as_json else show_plan)
        finally:
            if live:
                live.stop()
    if as_json:
        emit({"ok": True, "stack": stack, "seconds": round(result.seconds, 2), "warnings": result.warnings,
                          "plan": plan_doc(result.plan),
                          "rollouts": [result_doc(r) for r in result.rollouts],
                          "services": {n: {"state": v.state.value, "reason": v.reason, "running": v.running,
                                           "desired": v.desired} for n, v in result.verdicts.items()}})
    else:
        for r in result.rollouts:
            report(r, as_json)
        err.print(f"[green]stack {stack} converged and healthy in {result.seconds:.1f}s[/]")


DIFF_CHANGES = 4  # `fleet diff`: a deploy would change something (as terraform plan -detailed-exitcode's 2)


@app.command()
def diff(files: list[Path] = FILES, stack: str = STACK,
         image: list[str] = typer.Option([], "--image", help="SERVICE=IMAGE, overrides the file's image"),
         replace_promoted: bool = typer.Option(False, "--replace-promoted", help="as for `fleet deploy`"),
         consul: str = CONSUL, as_json: bool = JSON):
    """What `fleet deploy` would change, per service and key, and how. Changes nothing. Exit 0: nothing
    to change; 4: changes to apply; 2: the deploy would be refused (bad file, or it would undo a promotion)."""
    try:
        result = run_deploy(files, stack, parse_images(image), 0, consul, replace_promoted=replace_promoted,
                            dry_run=True)
    except FleetError as e:
        if isinstance(e, BadInput) and e.result is not None:
            if as_json:
                emit({"ok": False, "exit_code": e.exit_code, "error": str(e), "plan": plan_doc(e.result)})
                raise typer.Exit(e.exit_code)
            show_plan(e.result)
        fail(e, as_json)
    if as_json:
        emit({"ok": True, "changed": result.plan.changed, "plan": plan_doc(result.plan)})
    else:
        show_plan(result.plan)
    raise typer.Exit(DIFF_CHANGES if result.plan.changed else 0)


def plan_doc(plan) -> list[dict]:
    return [{"service": c.service, "how": c.how.value, "note": c.note,
              "changes": [{"key": k.key, "old": k.old, "new": k.new} for k in c.changes]} for c in plan.services]


def show_plan(plan) -> None:
    colour = {"unchanged": "dim", "canary": "cyan", "refuse": "red", "remove": "red"}
    for c in plan.services:
        err.print(f"[{colour.get(c.how.value, 'yellow')}]{c.service}: {c.how.value}[/]"
                  + (f" ({c.note})" if c.note else ""), highlight=False)
        for k in c.changes:
            err.print(f"    {k}", highlight=False, markup=False)


@app.command()
def status(stack: str = STACK, consul: str = CONSUL, as_json: bool = JSON,
           watch: bool = typer.Option(False, "--watch", help="follow the stack's rollouts live until interrupted: "
                                      "in place on a terminal, else (or with --json) one JSON line per change"),
           wait: bool = typer.Option(False, "--wait", help="follow the service's rollout in progress (else the next "
                                     "to start) to its end, a line per change, and exit as `fleet rollout` would: "
                                     "0 promoted, 1 rolled back or aborted, 3 unreachable, 124 at --timeout"),
           timeout: str = typer.Option("30m", "--timeout", help="with --wait: how long to wait, e.g. 90s, 20m"),
           service: str = SERVICE):
    """Services, tasks, Docker health and Consul checks of a stack, in one view."""
    try:
        limit = _duration("--timeout", timeout)
        swarm = engine()
        catalog = Catalog(consul_of(swarm, stack, consul))
        doc = read_status(swarm, catalog, stack)
        if not doc["services"]:
            raise BadInput(f"no stack named {stack!r}: deploy it with `fleet deploy --stack {stack}`")
        if (watch or wait) and doc["consul_error"]:
            raise Unreachable(doc["consul_error"])
        if wait:
            _wait(catalog, stack, service, limit, as_json)
            return
        if watch:
            _watch(swarm, catalog, stack, as_json or not out.is_terminal)
            return
        if doc["consul_error"]:  # Swarm's view is still shown, but the answer is partial
            doc.update(ok=False, exit_code=Unreachable.exit_code, error=doc["consul_error"])
        if as_json:
            emit(doc)
        else:
            render(doc)
    except FleetError as e:
        fail(e, as_json)
    except KeyboardInterrupt:
        sys.exit(0)
    if doc.get("exit_code"):
        raise typer.Exit(doc["exit_code"])


def _watch(swarm: Swarm, catalog: Catalog, stack: str, lines: bool) -> None:
    """The live view: on a terminal the stack's table and each rollout, redrawn in place; otherwise one
    JSON line ({"at", "stack", "rollouts"}) each time what a rollout shows changes."""
    stopped, last, refreshed = threading.Event(), None, 0.0
    live = None if lines else Live(console=out, auto_refresh=False)
    if live:
        live.start()
    try:
        for views in watch_rollouts(catalog, stack, stopped):
            if lines:
                if view.changed(last, {"rollouts": views}):
                    emit({"at": round(time.time(), 3), "stack": stack, "rollouts": views}, flush=True)
                last = {"rollouts": views}
                continue
            if time.monotonic() - refreshed > 2:  # Swarm's side of the view, every 2 s
                table, refreshed = status_table(read_status(swarm, catalog, stack)), time.monotonic()
            text = "\n".join(line for v in views for line in view.lines(v)) or "no rollout in progress"
            live.update(Group(Text(text), table), refresh=True)  # the rollout first: a short terminal cuts the end
    finally:
        stopped.set()
        if live:
            live.stop()


def _wait(catalog: Catalog, stack: str, service: str, limit: float, as_json: bool) -> None:
    """`fleet status --wait`: a line per change of the service's rollout (JSON with --json), then its outcome
    as the exit code; TimedOut (124) when `limit` seconds pass first."""
    last, deadline = None, time.monotonic() + limit
    for v in follow_rollout(catalog, stack, service, deadline):
        if not view.changed(last, v):
            continue
        last = v
        if as_json:
            emit({"at": round(time.time(), 3), "stack": stack, **v}, flush=True)
        else:
            paused = " (paused)" if v.get("paused_since") else ""
            out.print(f"{service} revision {v['revision']} ({v['image']}): {v['phase']}{paused} at {v['share']}%"
                      f"{': ' + v['reason'] if v.get('reason') else ''}", highlight=False, markup=False)
        if v.get("ended"):
            code = view.exit_code(v["phase"])
            if code:
                raise typer.Exit(code)
            return
    raise TimedOut(f"no rollout of {stack}_{service} ended within {limit:g}s"
                   + (f"; it is {last['phase']} at {last['share']}%" if last else "; none started") +
                   "; nothing was changed")


def render(doc: dict) -> None:
    out.print(status_table(doc))
    for n in doc["nodes"]:
        if n["flag"]:
            err.print(f"[yellow]node {n['hostname']} ({n['role']}) is {n['flag']}[/]")
    for r in doc["rollouts"]:
        note = " [red]orphaned: its fleet process is gone; run `fleet rollout --resume`[/]" if r["orphaned"] else ""
        note += " [yellow]paused: `fleet resume` goes on[/]" if r.get("paused") else ""
        out.print(f"rollout of {r['service']} to {r['image']} (revision {r['revision']}): {r['phase']}, canary share "
                  f"{r['share']}%{note}")
    plane = doc.get("control_plane") or {}
    if plane.get("servers"):
        voters = [s["node"] for s in plane["servers"] if s["voter"]]
        out.print(f"consul: {len(plane['servers'])} server(s), leader {plane['leader'] or 'none'}, "
                  f"{len(voters)} voter(s): {', '.join(voters)}", highlight=False)
    for warning in plane.get("warnings", []) + ([plane["error"]] if plane.get("error") else []):
        err.print(f"[yellow]consul: {warning}[/]", highlight=False)
    if doc["consul_error"]:
        err.print(f"[yellow]consul: {doc['consul_error']}[/]")


def _line(*parts) -> Table:
    """A line that wraps at spaces at the console's width, even on a console in soft-wrap mode (fleet's own)."""
    table = Table.grid()
    table.add_row(Text.assemble(*parts))
    return table


def status_table(doc: dict) -> Group:
    """The stack as a person reads it, legible at 80 columns (a terminal, or a pipe): a line for each service
    (name, image, version, role, tasks running, Swarm's update), then its tasks, one row each (slot, the ID
    `docker stack ps` shows, node, state, health, Consul's check), and a line for a task whose image is not
    the service's. Nothing is cut: what does not fit wraps. Consul's check output is in --json."""
    parts = [_line((f"stack {doc['stack']}", "bold"))]
    for s in doc["services"]:
        about = [s["image"], f"v{s['version']}" if s["version"] else "", s["role"] or "",
                 f"{s['replicas']['running']}/{s['replicas']['desired']} running",
                 f"update {s['update']['state']}" if s["update"]["state"] else ""]
        parts.append(_line((s["name"], "bold"), "  ", "  ".join(a for a in about if a)))
        if not s["tasks"]:
            continue
        tasks = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="dim")
        for name in ("  task", "id", "node", "state", "health", "consul"):
            tasks.add_column(name, overflow="fold")
        others = []
        for t in s["tasks"]:
            c, slot = t["consul"], t["name"].removeprefix(s["name"]) or "-"
            state = t["state"] if t["state"] == t["desired_state"] else f"{t['state']} (desired {t['desired_state']})"
            consul = f"{c['status']}{'' if c['version'] in (None, s['version']) else ' v' + c['version']}" if c else ""
            tasks.add_row(f"  {slot}", t["id"][:12], t["node"] + (f" [red]({t['node_flag']})[/]" if t["node_flag"] else ""),
                          state, t["health"] or "", consul)
            if t["image"] != s["image"]:
                others.append(_line(("  ", ""), (f"{slot} {t['id'][:12]} runs {t['image']}", "yellow")))
        parts += [tasks, *others]
    return Group(*parts)


# rollouts ------------------------------------------------------------------------------------------
def result_doc(r: "controller.Result") -> dict:
    return {"revision": r.revision, "outcome": r.phase.value, "reason": r.reason, "image": r.image,
            "seconds": round(r.seconds, 2), "timeline": r.timeline, "notify_failures": r.notify_failures}


def report(r: "controller.Result", as_json: bool) -> None:
    if as_json:
        emit({"ok": True, **result_doc(r)})
    else:
        for failure in r.notify_failures:
            err.print(f"[yellow]{redact_text(failure)}[/]", highlight=False, markup=False)
        err.print(f"[green]revision {r.revision} ({r.image}): {r.phase.value}[/] {redact_text(r.reason)}",
                  highlight=False)


def show_progress(as_json: bool):
    def progress(r: Rollout) -> None:
        if not as_json:
            colour = "red" if r.failure else "green" if r.phase is Phase.PROMOTED else "yellow"
            err.print(f"[{colour}]{r.phase.value}[/]{' (paused)' if r.paused else ''} canary share "
                      f"{r.share}%"
                      + (f": {r.reason}" if r.reason else "") + (f" ({r.judgement.reason})" if r.judgement else ""),
                      highlight=False)
    return progress


def _duration(flag: str, text: str) -> float:
    try:
        return durations.parse(text)
    except ValueError as e:
        raise BadInput(f"{flag}: {e}") from None


@app.command()
def rollout(canary: bool = typer.Option(False, "--canary", help="run the new image as a canary (the only mode)"),
            image: str = typer.Option(None, "--image", help="the new image, e.g. fleet/inference:3"),
            stack: str = STACK, service: str = SERVICE,
            steps: str = typer.Option(None, "--steps", help="canary traffic shares in percent, rising [default: the "
                                      "service's fleet.rollout.* labels, else 10,25,50]"),
            step_duration: str = typer.Option(None, "--step-duration", help="time at each step [default: 30s]"),
            canary_replicas: int = typer.Option(None, "--canary-replicas", help="replicas of the canary service "
                                                "[default: 1]"),
            max_error_rate: float = typer.Option(None, "--max-error-rate", help="canary 5xx share allowed beyond "
                                                 "the stable's on the same window [default: 0.01]"),
            max_latency_ratio: float = typer.Option(None, "--max-latency-ratio", help="canary mean latency over "
                                                    "the stable's, at most [default: 1.5]"),
            max_divergence: float = typer.Option(None, "--max-divergence", help="how far the canary's mix of "
                                                 "predicted classes may differ from the stable's on users' "
                                                 "traffic (total variation, 0..1) [default: 0.2]"),
            progress_deadline: str = typer.Option(None, "--progress-deadline",
                                                  help="time for the canary to become ready, and for evidence "
                                                       "[default: 5m]"),
            no_auto_promote: bool = typer.Option(None, "--no-auto-promote/--auto-promote",
                                                 help="wait for `fleet promote` [default: the policy's, else auto]",
                                                 show_default=False),
            pause_timeout: str = typer.Option("1h", "--pause-timeout",
                                              help="with --no-auto-promote: roll back if nobody promotes by then"),
            golden: Path = typer.Option(None, "--golden", help="golden set for the gate (JSON with inputs and "
                                        "labels); default: the one shipped with the canary's model"),
            golden_tolerance: float = typer.Option(None, "--golden-tolerance",
                                                   help="accuracy the canary may fall below the stable's "
                                                        "[default: 0.01]"),
            gateway: str = typer.Option("", "--gateway", help="the gateway's ops URL, or several comma-separated "
                                        "(default: the stack's gateway on each live node)"),
            prometheus: str = typer.Option("", "--prometheus",
                                           help="Prometheus's URL (default: found from the stack)"),
            webhook: list[str] = typer.Option([], "--webhook", help="a URL POSTed a JSON event at each phase change "
                                              "and at the end (repeatable); slack:URL, teams:URL or discord:URL posts "
                                              "that service's format [default: fleet.rollout.webhooks]"),
            pre_rollout: str = typer.Option(None, "--pre-rollout", help="a gate (URL or command) that must approve "
                                            "before the canary is created"),
            confirm_promotion: str = typer.Option(None, "--confirm-promotion", help="a gate (URL or command) that "
                                                  "must approve before the automatic promotion"),
            gate_deadline: str = typer.Option(None, "--gate-deadline", help="how long a gate may go without an "
                                              "answer, then the rollout rolls back [default: 10m]"),
            gate_env: list[str] = typer.Option([], "--gate-env", help="a variable a command gate gets from "
                                               "fleet's environment (repeatable); it gets PATH, HOME and "
                                               "FLEET_EVENT, and no other"),
            resume: bool = typer.Option(False, "--resume", help="finish or revert an orphaned rollout"),
            consul: str = CONSUL, as_json: bool = JSON):
    """Roll out a new image as a canary: stepped traffic, judged on evidence, promoted or rolled back.
    Settings not given here come from the service's rollout policy (`fleet.rollout.*` labels)."""
    with failing(as_json):
        if resume:
            given = tuple(u for u in (*webhook, pre_rollout, confirm_promotion) if u)  # secrets the record hid
            report(controller.resume(connect(stack, service, consul, gateway, prometheus),
                                     on_progress=show_progress(as_json), urls=given),
                   as_json)
            return
        if not canary or not image:
            raise BadInput("write `fleet rollout --canary --image IMAGE` (or `fleet rollout --resume`)")
        given = {"steps": steps, "step-duration": step_duration, "canary-replicas": canary_replicas,
                 "max-error-rate": max_error_rate, "max-latency-ratio": max_latency_ratio,
                 "max-divergence": max_divergence,
                 "progress-deadline": progress_deadline, "golden-tolerance": golden_tolerance,
                 "auto-promote": None if no_auto_promote is None else not no_auto_promote,
                 "webhooks": ",".join(webhook) or None, "pre-rollout": pre_rollout,
                 "confirm-promotion": confirm_promotion, "gate-deadline": gate_deadline,
                 "gate-env": ",".join(gate_env) or None}
        flags = policy.labels({k: v for k, v in given.items() if v is not None})
        _, errors = policy.parse(flags)
        if errors:
            raise BadInput("; ".join(f"--{key.removeprefix(policy.PREFIX)}: {why}" for key, why in errors))
        pause = _duration("--pause-timeout", pause_timeout)
        target = connect(stack, service, consul, gateway, prometheus)
        labels = target.stable().labels
        untrusted = [k for k in policy.commands_in(labels) if k not in flags]
        if untrusted:
            raise BadInput(f"{target.stable_name}'s labels name a command as a gate ({', '.join(untrusted)}): "
                           "`fleet rollout` runs no command read from a running service (anyone who can update it "
                           "could run commands here); give it as --pre-rollout/--confirm-promotion, or make the "
                           "gate a URL")
        chosen, errors = policy.parse({**{k: v for k, v in labels.items() if k.startswith(policy.PREFIX)},
                                       **flags, policy.PREFIX + "strategy": policy.Strategy.CANARY})
        if errors:
            raise BadInput(f"{target.stable_name}'s rollout policy (its labels): " +
                           "; ".join(f"{key}: {why}" for key, why in errors) + "; fix the stack file and deploy it")
        plan = replace(chosen.plan, pause_timeout=pause, golden=str(golden.resolve()) if golden else "")
        report(controller.rollout(target, image, plan, on_progress=show_progress(as_json)), as_json)


@app.command()
def promote(stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Promote the canary now (skipping any steps left), and wait for the outcome."""
    with failing(as_json):
        report(controller.request(connect(stack, service, consul), "promote"), as_json)


@app.command()
def abort(stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Abort the rollout in progress: canary share 0, canary removed, stable as it was."""
    with failing(as_json):
        t = connect(stack, service, consul)
        try:
            result = controller.request(t, "abort")
        except OperationFailed as e:  # the rollout ended reverted: what abort asked for
            if e.result is None:
                raise
            result = e.result
        report(result, as_json)


@app.command()
def pause(stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Hold the canary at its share: no step advances and nothing is promoted until `fleet resume`; its
    evidence is still judged (a failing canary still rolls back), and --pause-timeout ends a forgotten pause."""
    with failing(as_json):
        _held(controller.hold(connect(stack, service, consul), "pause"), "pause", as_json)


@app.command()
def resume(stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Go on with a paused rollout, from the step it was on, with the time that step had left."""
    with failing(as_json):
        _held(controller.hold(connect(stack, service, consul), "resume"), "resume", as_json)


def _held(state, action: str, as_json: bool) -> None:
    if state is None:
        raise OperationFailed(f"the rollout ended before `{action}` took effect; `fleet history` shows how")
    r = state.rollout
    if (r.paused) != (action == "pause"):
        raise OperationFailed(f"the rollout moved on ({r.phase.value} at {r.share}%) before `{action}` took effect")
    if as_json:
        emit({"ok": True, "revision": state.revision, "image": state.image, "phase": r.phase.value,
              "share": r.share, "paused": r.paused, "reason": r.reason})
        return
    out.print(f"revision {state.revision} ({state.image}): {r.phase.value}"
              f"{' (paused)' if r.paused else ''} at {r.share}%: {r.reason}", highlight=False,
              markup=False)


@app.command()
def rollback(to: int = typer.Option(None, "--to", help="revision number from `fleet history`"),
             stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Return the service to a past revision (default: the one before the current)."""
    with failing(as_json):
        report(controller.rollback(connect(stack, service, consul), to), as_json)


@app.command()
def history(revision: int = typer.Argument(None, help="one revision (with --report: default the latest)"),
            report_file: Path = typer.Option(None, "--report", help="write the rollout's report: FILE.html (one "
                                             "self-contained page of plots) or FILE.png"),
            prometheus: str = typer.Option("", "--prometheus", help="Prometheus's URL (default: found from the stack)"),
            stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Past revisions of the service and how their rollouts ended; `--report` draws one."""
    with failing(as_json):
        t = connect(stack, service, consul, prometheus_url=prometheus)
        records, current = controller.history(t)
        if revision is not None:
            records = [h for h in records if h.revision == revision]
            if not records:
                raise BadInput(f"no revision {revision}; `fleet history` lists them")
        if report_file is not None:
            if not records:
                raise BadInput("no revision to report on yet")
            written = controller.write_report(t, records[-1], report_file)
            if as_json:
                emit({"ok": True, "report": str(report_file), "revision": records[-1].revision,
                                  "series": written})
            else:
                err.print(f"[green]revision {records[-1].revision}: report written to {report_file}[/]")
            return
    if as_json:
        emit({"ok": True, "revisions": [{**h.to_dict(), "current": h.revision == current} for h in records]})
        return
    for line in history_lines(f"{stack}_{service}", records, current):
        out.print(line, highlight=False, markup=False)


def history_lines(title: str, records: list, current: int | None) -> list[str]:
    """The revisions as lines that nothing cuts at any width: revision (* the one running), outcome, when it
    ended and the image on one line, the reason under it (a terminal wraps it, a pipe keeps it whole)."""
    head = ("rev", "outcome", "ended")
    rows = [(f"{h.revision}{' *' if h.revision == current else ''}", h.outcome,
             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.ended_at)) if h.ended_at else "-") for h in records]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(3)]
    lines = [title, "  " + "  ".join(c.ljust(w) for c, w in zip(head, widths)) + "  image"]
    for row, h in zip(rows, records):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + h.image)
        if h.reason:
            lines.append("  " + " " * (widths[0] + 2) + h.reason)
    return lines


# live configuration ----------------------------------------------------------------------------------
config_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="The service's batching, admission and GPU knobs, applied by its replicas without a restart.")
app.add_typer(config_app, name="config")


def _config(stack: str, service: str, consul: str | None, as_json: bool, change=None) -> None:
    """Read (and with `change`, edit) the live configuration of the stack's service, then print it."""
    with failing(as_json):
        t = connect(stack, service, consul)
        name = t.consul_name
        doc = change(t.catalog.consul, name) if change else live_config.read(t.catalog.consul, name)[1]
    if as_json:
        emit({"ok": True, "key": config_key(name), "config": doc})
        return
    table = Table("knob", "value", "what", title=f"{config_key(name)} (unset knobs: the service's environment)")
    for knob, (_, low, high, what) in live_config.KNOBS.items():
        table.add_row(knob, str(doc.get(knob, "")), f"{what} ({low:g}..{high:g})")
    out.print(table)


@config_app.command("get")
def config_get(stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Show the knobs set through fleet (unset ones keep the service's environment)."""
    _config(stack, service, consul, as_json)


@config_app.command("set")
def config_set(assignments: list[str] = typer.Argument(..., help="KNOB=VALUE, e.g. max_batch=8"),
               stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Set knobs; every value is checked first (a bad one: exit 2, nothing written)."""
    with failing(as_json):
        values = live_config.parse_assignments(assignments)
    _config(stack, service, consul, as_json, lambda c, name: live_config.set_knobs(c, name, values))


@config_app.command("unset")
def config_unset(knobs: list[str] = typer.Argument(..., help="knob names, e.g. max_batch"),
                 stack: str = STACK, service: str = SERVICE, consul: str = CONSUL, as_json: bool = JSON):
    """Give knobs back to the service's environment."""
    with failing(as_json):
        live_config.check_names(knobs)
    _config(stack, service, consul, as_json, lambda c, name: live_config.unset_knobs(c, name, knobs))


if __name__ == "__main__":
    app()
