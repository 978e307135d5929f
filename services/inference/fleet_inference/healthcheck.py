"""The container's HEALTHCHECK command: healthy when the probe server's /ready answers 200 (ready) or 429
(degraded).

Uses only the standard library, so it needs nothing the image lacks. It prints the readiness body,
which Docker keeps in the health log: `docker inspect` and `fleet deploy` show the phase and reason.
"""
import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('FLEET_ADMIN_PORT', '8001')}/ready"  # the probe server
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("FLEET_HEALTHCHECK_TIMEOUT", "2"))) as r:
            print(r.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as e:
        print(e.read().decode(errors="replace"))
        return 0 if e.code == 429 else 1
    except OSError as e:
        print(f"no answer from {url}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
