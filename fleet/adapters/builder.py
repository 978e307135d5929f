"""Building a model's image through docker-py: the package on the service's base image, checked inside
the image it built (the weights against the manifest) before the tag is given, then pushed if asked."""
import json
import tempfile

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from ..errors import BadInput, OperationFailed, Unreachable
from ..package import MODEL_DIR, Package, write_context
from .swarm import engine_client

CHECK_TIMEOUT = 300  # seconds for the check in the image (loading torch and the weights, the golden rows)


class Builder:
    def __init__(self, client: docker.DockerClient | None = None):
        try:
            self.client = client or engine_client()
            self.client.ping()
        except (DockerException, OSError) as e:
            raise Unreachable(f"cannot reach the Docker engine ({e}); start it or set DOCKER_HOST") from None

    def build(self, package: Package, base: str, tag: str) -> dict:
        """Build, check and tag the image; its id, layers and the check's figures. BadInput (no image
        left) when the base is missing or the weights contradict the manifest."""
        self._base(base)
        with tempfile.TemporaryFile() as context:
            write_context(package, base, context)
            context.seek(0)
            try:
                image, _ = self.client.images.build(fileobj=context, custom_context=True, labels=package.labels,
                                                    rm=True, forcerm=True, pull=False)
            except BuildError as e:
                raise OperationFailed(f"docker build of {package.directory} failed: {e.msg}") from None
        try:
            figures = self._check(image.id, package)
        except BadInput:
            if not image.tags:  # the candidate was never tagged: nothing of it stays
                self.client.images.remove(image.id, noprune=False)
            raise
        image.tag(*split(tag))
        image.reload()
        return {"image": tag, "id": image.id, "layers": image.attrs["RootFS"]["Layers"], "labels": package.labels,
                "check": figures}

    def push(self, tag: str) -> str:
        """Push `tag` to its registry; the digest the registry gave it."""
        digest = ""
        try:
            for line in self.client.images.push(*split(tag), stream=True, decode=True):
                if "error" in line:
                    raise OperationFailed(pushing_failed(tag, line["error"]))
                digest = (line.get("aux") or {}).get("Digest", digest)
        except APIError as e:
            raise OperationFailed(pushing_failed(tag, e.explanation)) from None
        return digest

    def _base(self, base: str) -> None:
        try:
            self.client.images.get(base)
        except ImageNotFound:
            raise BadInput(f"base image {base} is not on this engine: `make setup` builds fleet/inference:base "
                           "(scripts/images.sh), or give --base an image of the inference service") from None

    def _check(self, image_id: str, package: Package) -> dict:
        container = self.client.containers.create(image_id, ["python3", "-m", "fleet_inference.check", MODEL_DIR],
                                                  network_disabled=True, labels={"fleet.build-check": "1"})
        try:
            container.start()
            code = container.wait(timeout=CHECK_TIMEOUT).get("StatusCode")
            out = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
        finally:
            container.remove(force=True)
        if code == 2:
            raise BadInput(f"model package {package.directory}: {err.splitlines()[-1] if err else 'wrong'}")
        if code != 0:
            raise OperationFailed(f"the check in the image exited {code}: {err[-1000:]}")
        return json.loads(out.splitlines()[-1])


def split(tag: str) -> tuple[str, str]:
    """An image name's repository and tag ("latest" when it names none; a registry's port is no tag)."""
    repository, _, version = tag.rpartition(":")
    return (repository, version) if repository and "/" not in version else (tag, "latest")


def pushing_failed(tag: str, why: str) -> str:
    return (f"docker push {tag} failed: {why}; the image is built here: check that its registry is reachable "
            f"(and `docker login` to it if it asks), then `docker push {tag}`")
