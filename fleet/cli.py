"""fleet's command line: parse, call a use case, print. Exit codes: 0 done; 1 failed and restored;
2 bad input, nothing changed; 3 Docker or Consul unreachable, nothing changed."""
import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import durations, stackfile
from .adapters.consul import Catalog, client as consul_client
from .adapters.swarm import EngineUnavailable, Swarm
from .convergence import State
from .deploy import deploy as run_deploy, parse_images, routing_mesh_available
from .errors import BadInput, FleetError, Unreachable
from .status import status as read_status

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

STACK = typer.Option("fleet", "--stack", help="stack name")
JSON = typer.Option(False, "--json", help="one JSON document on stdout, nothing else there")
CONSUL = typer.Option(None, "--consul", envvar="CONSUL_HTTP_ADDR", help="Consul HTTP address")
FILES = typer.Option([Path("docker-stack.yml")], "-c", "--compose-file", help="stack file(s), merged in order")


def fail(e: FleetError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": False, "exit_code": e.exit_code, "error": str(e)}))
    err.print(f"[bold red]fleet:[/] {e}", markup=True, highlight=False)
    raise typer.Exit(e.exit_code)


def progress_table(verdicts) -> Table:
    table = Table("service", "state", "running", "why")
    colour = {State.CONVERGED: "green", State.PROGRESSING: "yellow", State.FAILED: "red"}
    for name, v in verdicts.items():
        table.add_row(name, f"[{colour[v.state]}]{v.state.value}[/]", f"{v.running}/{v.desired}", v.reason)
    return table


@app.command()
def lint(files: list[Path] = FILES, as_json: bool = JSON):
    """Check a stack file for what would make rollouts unsafe. Exit 2 on errors."""
    try:
        findings = stackfile.lint(stackfile.load(files), routing_mesh=routing_mesh_available())
    except FleetError as e:
        fail(e, as_json)
    errors = [f for f in findings if f.severity is stackfile.Severity.ERROR]
    if as_json:
        print(json.dumps({"ok": not errors, "findings": [
            {"severity": f.severity.value, "service": f.service, "key": f.key, "message": f.message}
            for f in findings]}))
    else:
        for f in findings:
            err.print(f, style="red" if f.severity is stackfile.Severity.ERROR else "yellow", highlight=False)
        err.print(f"{len(errors)} error(s), {len(findings) - len(errors)} warning(s)")
    raise typer.Exit(2 if errors else 0)


@app.command()
def deploy(files: list[Path] = FILES, stack: str = STACK,
           image: list[str] = typer.Option([], "--image", help="SERVICE=IMAGE, overrides the file's image"),
           timeout: str = typer.Option("10m", "--timeout", help="deadline for convergence, e.g. 90s or 10m"),
           consul: str = CONSUL, as_json: bool = JSON):
    """Deploy the stack and wait until it has converged and is healthy, or say why not."""
    try:
        try:
            seconds = durations.parse(timeout)
        except ValueError as e:
            raise BadInput(f"--timeout: {e}") from None
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

        if live:
            live.start()
        try:
            result = run_deploy(files, stack, images, seconds, consul, on_progress=progress)
        finally:
            if live:
                live.stop()
    except FleetError as e:
        fail(e, as_json)
    if as_json:
        print(json.dumps({"ok": True, "stack": stack, "seconds": round(result.seconds, 2), "warnings": result.warnings,
                          "services": {n: {"state": v.state.value, "reason": v.reason, "running": v.running,
                                           "desired": v.desired} for n, v in result.verdicts.items()}}))
    else:
        err.print(f"[green]stack {stack} converged and healthy in {result.seconds:.1f}s[/]")


@app.command()
def status(stack: str = STACK, consul: str = CONSUL, as_json: bool = JSON,
           watch: bool = typer.Option(False, "--watch", help="refresh every 2 s until interrupted")):
    """Services, tasks, Docker health and Consul checks of a stack, in one view."""
    try:
        try:
            swarm = Swarm()
            swarm.check()
        except EngineUnavailable as e:
            raise Unreachable(str(e)) from None
        catalog = Catalog(consul_client(consul))
        while True:
            doc = read_status(swarm, catalog, stack)
            if not doc["services"]:
                raise BadInput(f"no stack named {stack!r}: deploy it with `fleet deploy --stack {stack}`")
            if as_json:
                print(json.dumps(doc))
            else:
                render(doc)
            if not watch:
                break
            time.sleep(2)
    except FleetError as e:
        fail(e, as_json)
    except KeyboardInterrupt:
        sys.exit(0)


def render(doc: dict) -> None:
    table = Table("service / task", "image", "version", "role", "state", "health", "consul", title=f"stack {doc['stack']}")
    for s in doc["services"]:
        update = f" (update {s['update']['state']})" if s["update"]["state"] else ""
        table.add_row(f"[bold]{s['name']}[/]", s["image"], s["version"] or "", s["role"] or "",
                      f"{s['replicas']['running']}/{s['replicas']['desired']} running{update}", "", "")
        for t in s["tasks"]:
            c = t["consul"]
            table.add_row(f"  {t['name']} {t['id'][:12]}", t["image"], "", "", f"{t['state']}/{t['desired_state']}",
                          t["health"] or "", f"{c['status']}: {c['output'][:40]}" if c else "")
    out.print(table)
    if doc["consul_error"]:
        err.print(f"[yellow]consul: {doc['consul_error']}[/]")


if __name__ == "__main__":
    app()
