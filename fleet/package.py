"""A model package, what `fleet build` turns into an image: a directory with the weights (TorchScript),
`manifest.json` (name, version, input shape, classes, held-out accuracy, golden set) and the golden set.

Pure but for reading the directory: the checks that need no torch (the manifest's fields, its files,
the weights' checksum) and the image's build context, made reproducible (same package, same bytes).
The checks that need the weights run in the image itself (`python3 -m fleet_inference.check`)."""
import hashlib
import io
import json
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

MODEL_DIR = "/models/package"  # where the image holds the package (the base image's MODEL_PATH)
REQUIRED = ("name", "version", "golden")  # and num_classes, accuracy, or output_shape (the image checks)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # a name or version that fits a URL path, a tag, a label
VERSION_LABEL, MODEL_LABEL, SHA_LABEL = "fleet.model-version", "fleet.model", "fleet.model-sha256"


@dataclass(frozen=True)
class Package:
    directory: Path
    manifest: dict  # as the image holds it: the package's, with the weights' sha256 filled in
    files: tuple[str, ...]  # the package's other files, relative, sorted

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def labels(self) -> dict[str, str]:
        """The image labels fleet reads: the version a replica reports, the model and its weights."""
        return {VERSION_LABEL: self.version, MODEL_LABEL: self.manifest["name"], SHA_LABEL: self.manifest["sha256"]}


def read_package(directory: Path) -> Package:
    """The package in `directory`, its manifest checked for what needs no torch; BadInput naming the
    field and the fix."""
    path = directory / "manifest.json"
    if not directory.is_dir():
        raise BadInput(f"{directory}: no such directory; give a model package (weights, manifest.json, golden set)")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no manifest; a model package needs manifest.json (README, \"Your own model\")") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"{path} is not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise BadInput(f"{path} must hold a JSON object")
    missing = [f for f in REQUIRED if f not in manifest] + (
        [] if "input_shape" in manifest or "inputs" in manifest else ["input_shape (one input) or inputs (several)"])
    if missing:
        raise BadInput(f"{path} lacks the field(s) {missing} (README, \"Your own model\", lists each)")
    for field in ("name", "version"):
        if not NAME.match(str(manifest[field])):
            raise BadInput(f"{path}: {field} {manifest[field]!r} must be letters, digits, '.', '_' or '-' "
                           "(it names the model in URLs, Consul tags and image labels)")
    weights = directory / str(manifest.get("file", "model.pt"))
    if not weights.is_file():
        raise BadInput(f"{path}: file {weights.name!r} (the weights) is not in {directory}; set the field file "
                       "to the TorchScript file's name")
    digest = sha256_of(weights)
    if manifest.get("sha256", digest) != digest:
        raise BadInput(f"{path}: sha256 {manifest['sha256'][:12]}… does not match {weights.name} "
                       f"({digest[:12]}…); remove the field (fleet build fills it in) or fix the weights")
    golden = manifest["golden"]
    if not isinstance(golden, dict) or not (directory / str(golden.get("file", "golden.json"))).is_file():
        raise BadInput(f"{path}: golden must be {{\"file\": ..., \"size\": ..., \"accuracy\": ...}} naming a file "
                       f"in {directory} with the golden inputs and their labels")
    files = tuple(sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                         if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")))
    return Package(directory, {**manifest, "version": str(manifest["version"]), "sha256": digest}, files)


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def dockerfile(base: str) -> str:
    # ADD unpacks a local tar with its entries' times: COPY would give the directories it creates the
    # build's time, and so a new layer digest on every build.
    return (f"FROM {base}\n"
            "ADD package.tar /\n"
            f"ENV MODEL_PATH={MODEL_DIR}\n")


def write_context(package: Package, base: str, out) -> None:
    """The build context as a tar in `out`: the Dockerfile and the package as a tar of its own, every entry
    with fixed owner, mode and time, in a fixed order: the same package and base give the same layers."""
    with tempfile.TemporaryFile() as inner:
        _package_tar(package, inner)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, "Dockerfile", dockerfile(base).encode())
            info = tarfile.TarInfo("package.tar")
            info.mode, info.mtime, info.size = 0o644, 0, inner.tell()
            inner.seek(0)
            tar.addfile(info, inner)


def _package_tar(package: Package, out) -> None:
    """The package as the image holds it, under MODEL_DIR (the weights streamed, never all in memory)."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = MODEL_DIR.strip("/")
        dirs = {str(d) for f in package.files for d in Path(f).parents} - {"."}
        for d in [str(p) for p in reversed(Path(root).parents) if str(p) != "."] + [root] + [
                f"{root}/{sub}" for sub in sorted(dirs)]:
            _add(tar, d, directory=True)
        _add(tar, f"{root}/manifest.json", (json.dumps(package.manifest, indent=2, sort_keys=True) + "\n").encode())
        for f in package.files:
            _add(tar, f"{root}/{f}", source=package.directory / f)


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, source: Path | None = None,
         directory: bool = False) -> None:
    """One entry owned by root, time 0, mode 0644 (0755 a directory)."""
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    elif source is not None:
        info.mode, info.size = 0o644, source.stat().st_size
        with source.open("rb") as f:
            tar.addfile(info, f)
    else:
        info.mode, info.size = 0o644, len(data)
        tar.addfile(info, io.BytesIO(data))
