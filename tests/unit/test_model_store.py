"""The artifact loader against real TorchScript files written by the real training code."""
import json

import pytest
import torch

from fleet_inference import model_store

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "inference"))
from train import Classifier, records, write_artifact  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture
def artifact(tmp_path):
    torch.manual_seed(0)
    held_x, held_y = records()[1]
    write_artifact(Classifier(), tmp_path, version=7, acc=0.5, steps=0, golden=(held_x[:16], held_y[:16]))
    return tmp_path


def test_good_artifact_loads_and_warms(artifact):
    module, manifest = model_store.load_artifact(str(artifact), CPU)
    assert manifest.version == "7" and manifest.features == 8
    assert manifest.input_range == (0.0, 10_000.0)  # what the replica validates requests against
    model_store.warm_up(module, manifest, CPU)


def test_flipped_byte_is_corrupt(artifact):
    p = artifact / "model.pt"
    b = bytearray(p.read_bytes())
    b[100] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(model_store.ArtifactError, match="corrupt"):
        model_store.load_artifact(str(artifact), CPU)


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(model_store.ArtifactError, match="no manifest"):
        model_store.load_artifact(str(tmp_path), CPU)


def test_shape_mismatch_is_caught_at_warm_up(artifact):
    m = json.loads((artifact / "manifest.json").read_text())
    m["input_shape"] = [5]
    (artifact / "manifest.json").write_text(json.dumps(m))
    module, manifest = model_store.load_artifact(str(artifact), CPU)
    with pytest.raises(model_store.ArtifactError, match="rejects input"):
        model_store.warm_up(module, manifest, CPU)


def test_artifact_ships_a_golden_set_the_manifest_describes(artifact):
    manifest = model_store.Manifest.read(artifact)
    golden = json.loads((artifact / manifest.golden["file"]).read_text())
    assert len(golden["inputs"]) == len(golden["labels"]) == manifest.golden["size"] == 16
    assert 0.0 <= manifest.golden["accuracy"] <= 1.0


def exported(artifact: Path, dynamic: bool) -> torch.nn.Module:
    """The artifact's model (the fixture's: seed 0, untrained) as a torch.export program, model.pt2, in its
    manifest instead of model.pt; the eager model."""
    torch.manual_seed(0)
    eager = Classifier().eval()
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
    torch.export.save(torch.export.export(eager, (torch.zeros(2, 8),), dynamic_shapes=shapes),
                      str(artifact / "model.pt2"))
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest.update(file="model.pt2", sha256=model_store.sha256_of(artifact / "model.pt2"))
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return eager


def test_a_torch_export_program_loads_and_answers_as_its_model(artifact):
    eager = exported(artifact, dynamic=True)
    module, manifest = model_store.load_artifact(str(artifact), CPU)
    model_store.warm_up(module, manifest, CPU, artifact)  # the golden set's 16 rows, too
    x = torch.randn(5, 8)
    scripted = torch.jit.load(str(artifact / "model.pt"))
    torch.testing.assert_close(module(x), eager(x))
    torch.testing.assert_close(module(x), scripted(x))  # the same model as the fixture's TorchScript


def test_a_program_exported_for_one_batch_size_is_refused_at_warm_up(artifact):
    exported(artifact, dynamic=False)
    module, manifest = model_store.load_artifact(str(artifact), CPU)
    with pytest.raises(model_store.ArtifactError, match=r"rejects input of shape \[16, 8\] and datatype FP32"):
        model_store.warm_up(module, manifest, CPU, artifact)
