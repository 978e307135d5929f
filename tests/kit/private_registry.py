"""A registry that wants a login, as teams run one (issue 40): Debian's docker-registry (in the cluster's node
image) with htpasswd over TLS, its certificate signed by a CA made here, published on 127.0.0.1:port; the CA
in /etc/docker/certs.d/127.0.0.1:port/ca.crt, where the engine and fleet look for it. Docker configs (a
DOCKER_CONFIG folder each) with the right login, a wrong one, none, or a credential helper (a script of the
docker-credential-* protocol). Everything is labelled fleet.test=1 and removed after, a killed run's too. Each
user has a port and a container name of its own (the single-node tests and the cluster's run at once, in two
workers: one registry's start removed the other's, and both tests failed)."""
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bcrypt

from tests.kit.helpers import wait_until

USER, PASSWORD = "ci", "fleet-private-s3cret"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class PrivateRegistry:
    def __init__(self, folder: Path, port: int = 31600):
        self.folder, self.port, self.host = folder, port, f"127.0.0.1:{port}"
        self.name = f"fleettest-private-registry-{port}"
        self.certs = folder / "certs"
        self.certs_d = Path("/etc/docker/certs.d") / self.host

    def start(self, network: str | None = None, storage: str | None = None) -> "PrivateRegistry":
        """Up on 127.0.0.1:port here, and (with `network`, the cluster's) as its name:5000 on that network too.
        `storage`: a volume of another registry's storage to serve (behind this one's login): what that one holds
        under a repository is there already, and a push to the same repository sends no layer it has."""
        self.stop()
        c = self.certs
        c.mkdir(parents=True)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                str(c / "ca.key"), "-out", str(c / "ca.crt"), "-days", "2", "-subj", "/CN=fleet test registry CA")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                str(c / "registry.key"), "-out", str(c / "registry.csr"), "-subj", "/CN=127.0.0.1")
        (c / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", str(c / "registry.csr"), "-CA", str(c / "ca.crt"), "-CAkey", str(c / "ca.key"),
                "-CAcreateserial", "-out", str(c / "registry.crt"), "-days", "2", "-extfile", str(c / "san.ext"))
        (c / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()}\n")
        (c / "config.yml").write_text(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n"
            "http:\n  addr: :5000\n  tls:\n    certificate: /certs/registry.crt\n    key: /certs/registry.key\n"
            "auth:\n  htpasswd:\n    realm: fleet-test\n    path: /certs/htpasswd\n")
        for f in c.iterdir():
            f.chmod(0o644)
        self.certs_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(c / "ca.crt", self.certs_d / "ca.crt")
        subprocess.run(["docker", "run", "-d", "--name", self.name, "--label", "fleet.test=1",
                        "-p", f"{self.host}:5000",
                        *(["--network", network] if network else []),
                        *(["-v", f"{storage}:/var/lib/docker-registry"] if storage else []),
                        "-v", f"{c}:/certs:ro", "--entrypoint", "docker-registry", "fleet/node:bookworm", "serve",
                        "/certs/config.yml"], check=True, capture_output=True, env=_local())
        wait_until(lambda: self._answers(), 30, f"the private registry on {self.host}")
        return self

    def _answers(self) -> bool:
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(self.certs / "ca.crt"),
                            f"https://{self.host}/v2/"], capture_output=True, text=True)
        return p.stdout == "401"  # up, over TLS with our CA, and wanting a login

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, env=_local())
        shutil.rmtree(self.certs_d, ignore_errors=True)

    def reach_from(self, nodes: tuple[str, ...]) -> None:
        """Each cluster node reaches the registry as 127.0.0.1:port too (a forwarder in the node, as the cluster's own
        registry is reached), and its engine checks it against the CA, in the node's certs.d."""
        for node in nodes:
            exec_ = ["docker", "exec", "-i", node, "sh", "-c"]
            subprocess.run([*exec_, f"mkdir -p {self.certs_d} && cat > {self.certs_d}/ca.crt"], input=(self.certs / "ca.crt").read_bytes(),
                           check=True, capture_output=True, env=_local())
            subprocess.run(["docker", "exec", "-d", node, "socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
                            f"TCP:{self.name}:5000"], check=True, capture_output=True, env=_local())

    def leave(self, nodes: tuple[str, ...]) -> None:
        for node in nodes:
            subprocess.run(["docker", "exec", node, "sh", "-c", f"pkill -f 'TCP-LISTEN:{self.port}'; rm -rf {self.certs_d}"],
                           capture_output=True, env=_local())

    def config(self, password: str | None) -> dict:
        """The environment of a client whose Docker config holds `password` for the registry (None: no login)."""
        folder = self.folder / ("docker-none" if password is None else
                                "docker-login" if password == PASSWORD else "docker-wrong")
        folder.mkdir(exist_ok=True)
        auths = {self.host: {"auth": base64.b64encode(f"{USER}:{password}".encode()).decode()}} if password else {}
        (folder / "config.json").write_text(json.dumps({"auths": auths}))
        return {"DOCKER_CONFIG": str(folder)}

    def helped(self) -> dict:
        """The environment of a client whose login comes from a credential helper (credHelpers), on its PATH."""
        folder = self.folder / "docker-helper"
        (folder / "bin").mkdir(parents=True, exist_ok=True)
        helper = folder / "bin/docker-credential-fleettest"
        helper.write_text(f"#!{sys.executable}\nimport json, sys\nserver = sys.stdin.read().strip()\n"
                          f"if sys.argv[1] != 'get' or server != {self.host!r}:\n"
                          "    print('credentials not found in native keychain'); sys.exit(1)\n"
                          f"print(json.dumps({{'ServerURL': server, 'Username': {USER!r}, 'Secret': {PASSWORD!r}}}))\n")
        helper.chmod(0o755)
        (folder / "config.json").write_text(json.dumps({"credHelpers": {self.host: "fleettest"}}))
        return {"DOCKER_CONFIG": str(folder), "PATH": f"{folder / 'bin'}:{os.environ['PATH']}"}

    def push(self, image: str, name: str) -> str:
        """`image` pushed as host/name with the login, the pushed name untagged here again (this engine holds no
        copy by that name: fleet reads it from the registry, Swarm pulls it); returns host/name."""
        target = f"{self.host}/{name}"
        env = self.config(PASSWORD)
        subprocess.run(["docker", "tag", image, target], check=True, capture_output=True, env=_local())
        p = subprocess.run(["docker", "push", target], capture_output=True, text=True, env={**_local(), **env})
        assert p.returncode == 0, p.stderr
        subprocess.run(["docker", "rmi", target], check=True, capture_output=True, env=_local())
        return target



def _local() -> dict:
    """The docker CLI against this machine's engine, whatever DOCKER_* the test process has."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
