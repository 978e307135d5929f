"""What `make demo` (scripts/consul-secrets.sh, scripts/prometheus-secrets.sh) left in this checkout's
`build/`: the stack's Consul CA and fleet's token, and the stack's Prometheus password and CA. A fleet command
run with none of Consul's variables set (no `CONSUL_*` at all) uses the first two, one with neither
`FLEET_PROMETHEUS_PASSWORD_FILE` nor `FLEET_PROMETHEUS_PASSWORD` the third, and one without
`FLEET_PROMETHEUS_CACERT` the fourth, as `. build/consul/fleet.env`
and `. build/prometheus-auth/fleet.env` would have set them; it says so once on stderr. Whatever the user
set, even to an empty value, is left as it is."""
import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]  # fleet's own checkout, where it runs from one


def builds(cwd: Path | None = None) -> list[Path]:
    """The `build/` folders to look in: the working directory's, then fleet's own checkout's."""
    found = []
    for root in (cwd or Path.cwd(), CHECKOUT):
        if (root / "build").is_dir() and (root / "build").resolve() not in found:
            found.append((root / "build").resolve())
    return found


def defaults(env: dict, cwd: Path | None = None) -> tuple[dict[str, str], str]:
    """The variables to add to `env` from a `build/` folder, and the line that says so ("" when none)."""
    add: dict[str, str] = {}
    used: list[str] = []
    for build in builds(cwd):
        before = len(add)
        ca, token = build / "consul/secrets/ca.pem", build / "consul/secrets/fleet.token"
        if not any(k.startswith("CONSUL_") for k in env) and not add and ca.is_file() and token.is_file():
            add.update(CONSUL_CACERT=str(ca), CONSUL_HTTP_TOKEN_FILE=str(token))
        password = build / "prometheus-auth/password"
        if not {"FLEET_PROMETHEUS_PASSWORD_FILE", "FLEET_PROMETHEUS_PASSWORD"} & set(env) \
                and "FLEET_PROMETHEUS_PASSWORD_FILE" not in add and password.is_file():
            add["FLEET_PROMETHEUS_PASSWORD_FILE"] = str(password)
        ca = build / "prometheus-auth/ca.pem"
        if "FLEET_PROMETHEUS_CACERT" not in env and "FLEET_PROMETHEUS_CACERT" not in add and ca.is_file():
            add["FLEET_PROMETHEUS_CACERT"] = str(ca)
        if len(add) > before:
            used.append(str(build))
    if not add:
        return {}, ""
    what = " and ".join(w for w, keys in (("the stack's Consul CA and fleet's token", "CONSUL_CACERT"),
                                          ("the stack's Prometheus password", "FLEET_PROMETHEUS_PASSWORD_FILE"),
                                          ("the stack's Prometheus CA", "FLEET_PROMETHEUS_CACERT"))
                        if keys in add)
    return add, (f"fleet: using {what} from {' and '.join(used)} (nothing set them: `. build/consul/fleet.env` and "
                 "`. build/prometheus-auth/fleet.env` do, or set CONSUL_* yourself)")


def apply() -> str:
    """Add the defaults to this process's environment; the line to say, or ""."""
    add, line = defaults(dict(os.environ))
    os.environ.update(add)
    return line
