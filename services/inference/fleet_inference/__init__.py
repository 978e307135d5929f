"""fleet's inference service: a FastAPI app serving a TorchScript model with meaningful health."""
