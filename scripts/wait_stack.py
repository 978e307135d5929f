"""Wait until every service of a stack runs healthy and its replicas pass in Consul (used by the demo)."""
import argparse
import sys
import time

from fleet.adapters.consul import Catalog, client
from fleet.adapters.swarm import Swarm


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("stack")
    ap.add_argument("--consul", default="http://127.0.0.1:8500")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    swarm, catalog = Swarm(), Catalog(client(args.consul))
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        lines, done = [], True
        for svc in sorted(swarm.stack_services(args.stack), key=lambda s: s.name):
            want = svc.attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
            ok = [t for t in swarm.tasks(svc.name) if t.state == "running" and t.health in (None, "healthy")]
            lines.append(f"{svc.name}: {len(ok)}/{want} running and healthy")
            done &= len(ok) == want
        try:
            passing = [i for i in catalog.instances("inference") if i.status == "passing"]
            lines.append(f"consul: {len(passing)} inference replica(s) passing "
                         f"({', '.join(sorted({'v' + i.version for i in passing})) or 'none'})")
        except Exception as e:
            passing = []
            lines.append(f"consul: not answering yet ({e})")
        done &= bool(lines) and len(passing) > 0
        msg = "; ".join(lines)
        if msg != last:
            print(msg, flush=True)
            last = msg
        if done:
            return 0
        time.sleep(1)
    print(f"stack {args.stack} not healthy after {args.timeout:.0f} s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
