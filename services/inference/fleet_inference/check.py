"""Check a model package against its weights, as `fleet build` does in the image it builds:

    python3 -m fleet_inference.check /models/package

loads the weights (checksum, TorchScript), runs them on the golden inputs and checks the outputs' shape
and the golden accuracy (or, for tensor outputs, the golden outputs within the tolerance) against the
manifest. Prints one JSON line of figures; exit 2 with the reason
on stderr when the package is wrong (the message names the manifest's field)."""
import json
import sys
from pathlib import Path

import torch

from .model_store import ArtifactError, answer, load_artifact, read_golden, zeros

ACCURACY_TOLERANCE = 0.005  # the manifest's golden accuracy against the dry run's (another CPU, same torch)


def check(directory: Path) -> dict:
    module, manifest = load_artifact(str(directory), torch.device("cpu"))
    answer(module, manifest, zeros(manifest, 2))
    if not manifest.golden:
        raise ArtifactError("the manifest has no golden set (field golden: {\"file\", \"size\", \"accuracy\"}): "
                            "fleet's golden gate needs labelled inputs to judge a canary before it gets traffic")
    inputs, expected = read_golden(directory, manifest)
    out = answer(module, manifest, inputs)
    if not bool(torch.isfinite(out).all()):
        raise ArtifactError("the model gives non-finite outputs (NaN or infinity) on its own golden inputs")
    figures = {"name": manifest.name, "version": manifest.version, "input_shape": list(manifest.input_shape),
               "input_dtype": manifest.input_dtype,
               "inputs": [{"name": i.name, "datatype": i.dtype, "shape": list(i.shape)} for i in manifest.inputs],
               "output": manifest.output, "output_shape": list(manifest.output_shape), "golden_rows": len(inputs[0])}
    if not manifest.classifies:
        tolerance = float(manifest.golden["tolerance"])
        gap = float((out - expected).abs().max())
        if gap > tolerance:
            raise ArtifactError(f"the weights' outputs on the golden inputs are up to {gap:.3g} from the golden "
                                f"set's outputs, over golden.tolerance {tolerance:g}: fix the golden set or the "
                                "weights")
        return {**figures, "golden_max_difference": round(gap, 6)}
    accuracy = float((out.argmax(dim=1) == torch.tensor(expected)).float().mean())
    claimed = manifest.golden.get("accuracy")
    if claimed is not None and abs(float(claimed) - accuracy) > ACCURACY_TOLERANCE:
        raise ArtifactError(f"golden.accuracy says {float(claimed):.4f} but the weights classify "
                            f"{accuracy:.4f} of the golden set right: fix the manifest or the weights")
    return {**figures, "num_classes": manifest.num_classes, "golden_accuracy": round(accuracy, 4)}

def main() -> None:
    try:
        print(json.dumps(check(Path(sys.argv[1] if len(sys.argv) > 1 else "/models/package"))))
    except ArtifactError as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
