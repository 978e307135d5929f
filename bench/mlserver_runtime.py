"""The peer's side of bench/peer_bench.py: an MLServer custom runtime serving a fleet model package's
TorchScript weights as fleet's replica does (one torch thread, inference mode), answering the same two
outputs: `probabilities` (FP32 [N, classes]) and `label` (INT64 [N], the most probable class).

Runs inside MLServer's own virtual environment (build/mlserver-venv), never imported by fleet."""
import json
from pathlib import Path

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchScriptPackage(MLModel):
    async def load(self) -> bool:
        package = Path(self.settings.parameters.uri)
        manifest = json.loads((package / "manifest.json").read_text())
        self._shape = tuple(manifest["input_shape"])
        self._model = torch.jit.load(str(package / manifest.get("file", "model.pt")), map_location="cpu").eval()
        torch.set_num_threads(1)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0])).float().reshape(-1, *self._shape)
        with torch.inference_mode():
            probs = self._model(x)
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output("probabilities", probs.numpy()),
            NumpyCodec.encode_output("label", probs.argmax(dim=1).numpy())])
