"""The HTTP face of a replica: /health, /ready, /predict, /metrics, /info, and the Open Inference
Protocol's /v2 routes (fleet_inference/oip.py).

/health and /ready are also answered on the admin port by a process of their own (fleet_inference/admin.py),
which is what Docker's healthcheck, Consul's check and the gateway probe: those never wait behind /predict.
"""
import asyncio
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import oip
from .batching import QueueFull
from .config import Settings
from .model_store import Manifest
from .phases import Phase, liveness_status
from .replica import Replica
from .validation import InputError, byte_count, check_content_type, parse_body, validate_inputs, validate_named

log = logging.getLogger("fleet_inference.app")
SERVER_VERSION = "1"  # this server's own version, as the Open Inference Protocol's server metadata gives it


class MetricsMiddleware:
    """Counts requests by route and status and times them by route and origin (fleet's synthetic requests
    apart from users'), a pure ASGI middleware: no body buffering."""

    def __init__(self, app, replica: Replica):
        self.app, self.replica = app, replica

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = route_of(scope["path"])
        origin = origin_of(scope)
        status = {"code": 500}
        started = time.perf_counter()
        is_predict = route in INFER_ROUTES
        if is_predict:
            self.replica.in_flight += 1
            self.replica.metrics.in_flight.inc()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if status.get("started"):
                raise
            # Answered here, not by Starlette's outermost handler: that one raises again after its answer, and
            # uvicorn then logs the traceback a second time and closes the connection, so the next request on
            # it was dropped (a replica raising in 3 of 10 predictions: 50 of 300 requests dropped, its other
            # answers' median 13.4 ms against 8.7 ms, which judged it on latency, not errors).
            incident = uuid.uuid4().hex[:12]
            log.error("incident %s on %s %s", incident, scope.get("method"), scope["path"], exc_info=exc)
            await JSONResponse({"error": f"internal error (incident {incident}; the replica's log has the details)"},
                               status_code=500)(scope, receive, send_wrapper)
        finally:
            m = self.replica.metrics
            # A client's error (4xx) is timed nowhere: answered in a millisecond, a flood of them from any client
            # moved a role's median, and with it the canary's latency verdict. What is timed, and so counted as
            # a request served, is what the replica answered (2xx) or failed (5xx).
            if not 400 <= status["code"] < 500:
                m.latency.labels(route, origin).observe(time.perf_counter() - started)
            m.requests.labels(route, str(status["code"])).inc()
            if is_predict:
                self.replica.in_flight -= 1
                m.in_flight.dec()


ROUTES = {"/health", "/ready", "/predict", "/metrics", "/info", "/golden"}
INFER_ROUTES = ("/predict", "/v2/infer")  # what fleet's judgement counts as predictions


def origin_of(scope) -> str:
    """Who sent a request: "synthetic" for fleet's own (header X-Fleet-Origin), else "organic". Pure."""
    return "synthetic" if (b"x-fleet-origin", b"synthetic") in scope["headers"] else "organic"


def route_of(path: str) -> str:
    """The route label of a request's path: a bounded set, whatever the path. Pure."""
    if path in ROUTES:
        return path
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "/v2/infer"
    return "/v2" if path == "/v2" or path.startswith("/v2/") else "other"


def create_app(settings: Settings) -> FastAPI:
    replica = Replica(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await replica.start()
        yield
        await replica.stop()

    app = FastAPI(title="fleet inference", lifespan=lifespan)
    app.state.replica = replica
    app.add_middleware(MetricsMiddleware, replica=replica)

    body = replica.answer

    @app.get("/health")
    async def health():
        return JSONResponse(body(replica.phase, replica.reason), status_code=liveness_status(replica.phase))

    @app.get("/ready")
    async def ready():
        r = replica.readiness()
        return JSONResponse(body(r.phase, r.reason), status_code=r.status_code)

    def refused() -> JSONResponse | None:
        """The answer to an inference request the replica cannot take now, or None when it can."""
        # A draining replica still serves what reaches it while Consul and the gateway take it out.
        if replica.module is None or replica.phase not in (Phase.READY, Phase.DRAINING):
            return JSONResponse(body(replica.phase, replica.reason, error="not ready"), status_code=503,
                                headers={"Retry-After": "1"})
        if replica.batcher.full():  # admission: refused before its body is read, parsed or queued
            return JSONResponse({"error": f"overloaded: queue holds {replica.batcher.depth} rows, bound "
                                          f"{replica.batcher.max_queue}"}, status_code=503, headers={"Retry-After": "1"})
        return None

    async def json_body(request: Request) -> object:
        check_content_type(request.headers.get("content-type"))
        return parse_body(await read_body(request, settings.max_body_bytes), settings.max_body_bytes)

    async def infer(request: Request, inputs: list) -> tuple[torch.Tensor, list[int] | None] | Response:
        """The outputs for a request's rows (one item per model input, its rows each flat) through the batcher
        and each row's class (None for a model of tensor outputs), or the answer to give instead."""
        work = asyncio.ensure_future(replica.predict(inputs))
        gone = asyncio.ensure_future(client_gone(request))
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client went away: its rows are dropped before they run
            work.cancel()
            return Response(status_code=499)
        gone.cancel()
        try:
            probs = work.result()
        except QueueFull as e:
            return JSONResponse({"error": f"overloaded: {e}"}, status_code=503, headers={"Retry-After": "1"})
        finite = torch.isfinite(probs).flatten(1).all(dim=1)
        if not bool(finite.all()):
            # The inputs were finite and inside the model's declared range, so this is the model's fault: a
            # 5xx, which the gateway sends again to another replica and fleet counts against a canary.
            row = int((~finite).nonzero()[0, 0])
            replica.metrics.non_finite.inc()
            log.error("model %s v%s gave a non-finite output for row %d of %d", replica.manifest.name,
                      replica.manifest.version, row, len(probs))
            return JSONResponse({"error": f"the model gave a non-finite output (NaN or infinity) for row {row}: "
                                          "a fault of the model, not of the request"}, status_code=500)
        if not replica.manifest.classifies:
            return probs, None
        labels = probs.argmax(dim=1).tolist()
        origin = origin_of(request.scope)
        for label, n in Counter(labels).items():
            replica.metrics.predictions.labels(str(label), origin).inc(n)
        return probs, labels

    @app.post("/predict")
    async def predict(request: Request):
        if (no := refused()) is not None:
            return no
        try:
            m = replica.manifest
            payload = await json_body(request)
            inputs = ([validate_inputs(payload, m.input_shape, settings.max_rows, m.input_range, m.input_dtype)]
                      if m.single else validate_named(payload, m.inputs, settings.max_rows))
        except InputError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        answer = await infer(request, inputs)
        if isinstance(answer, Response):
            return answer
        probs, labels = answer
        # A Response built here skips FastAPI's generic encoder: less work on the event loop per request.
        if labels is None:
            return JSONResponse({"version": replica.manifest.version, "outputs": probs.tolist()})
        doc = {"version": replica.manifest.version, "classes": labels, "probabilities": probs.tolist()}
        if replica.manifest.labels:  # the classes' names, where the manifest gives them
            doc["labels"] = [replica.manifest.labels[i] for i in labels]
        return JSONResponse(doc)

    # The Open Inference Protocol (KServe v2), HTTP/REST: health, metadata and inference.
    @app.get("/v2")
    async def v2_server():
        return oip.server_metadata(SERVER_VERSION)

    @app.get("/v2/health/live")
    async def v2_live():
        return Response(status_code=200 if liveness_status(replica.phase) == 200 else 500)

    @app.get("/v2/health/ready")
    async def v2_ready():
        return Response(status_code=200 if replica.readiness().status_code == 200 else 503)

    def model(name: str, version: str | None) -> Manifest:
        if replica.manifest is None:
            raise InputError(f"no model loaded yet ({replica.phase.value}: {replica.reason})", 503)
        oip.check_model(replica.manifest, name, version)
        return replica.manifest

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model(name: str, version: str | None = None):
        try:
            return oip.model_metadata(model(name, version))
        except InputError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_ready(name: str, version: str | None = None):
        try:
            model(name, version)
        except InputError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return await v2_ready()

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer(request: Request, name: str, version: str | None = None):
        if (no := refused()) is not None:
            return no
        try:
            m = model(name, version)
            header = request.headers.get(oip.BINARY_HEADER)
            if header is None:
                check_content_type(request.headers.get("content-type"))
            payload, binary = oip.split_body(await read_body(request, settings.max_body_bytes), header)
            inputs, outputs, request_id = oip.parse_infer(payload, m, settings.max_rows, binary)
        except InputError as e:
            return JSONResponse({"error": str(e)}, status_code=400 if e.status == 422 else e.status)
        answer = await infer(request, inputs)
        if isinstance(answer, Response):
            return answer
        out, labels = answer
        return JSONResponse(oip.infer_response(m, out.flatten().tolist(), len(out), labels, outputs, request_id))

    @app.get("/metrics")
    async def metrics():
        replica.gpu_memory()
        replica.metrics.queue_depth.set(replica.batcher.depth)
        return Response(generate_latest(replica.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info")
    async def info():
        m = replica.manifest
        return {"phase": replica.phase.value, "model": m.name if m else None, "version": m.version if m else None,
                "sha256": m.sha256 if m else None, "accuracy": m.accuracy if m else None,
                "golden": m.golden if m else None,
                "device": str(replica.device) if replica.device else None, "torch": torch.__version__,
                "role": settings.role, "task_id": settings.task_id, "torch_threads": torch.get_num_threads(),
                "config": replica.config}

    @app.get("/golden")
    async def golden():
        """The golden set shipped with the model (inputs and labels), for fleet's canary check."""
        m = replica.manifest
        if m is None or not m.golden:
            return JSONResponse({"error": "no golden set: the model is not loaded or its artifact has none"},
                                status_code=404)
        return FileResponse(Path(settings.model_path) / m.golden["file"], media_type="application/json")

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counted while it streams (chunked too): over `limit`, a 413 before it is all read. A client
    that goes away before its body is whole was counted a 500, which a stranger could send at will."""
    declared = byte_count(request.headers.get("content-length") or "")
    if declared is not None and declared > limit:
        raise InputError(f"body is {declared} bytes, over the limit of {limit}: send fewer rows", 413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InputError(f"body is over the limit of {limit} bytes: send fewer rows", 413)
            chunks.append(chunk)
    except ClientDisconnect:  # the client's doing, never the replica's: a 499, like a client gone mid-batch
        raise InputError(f"the client went away after {size} bytes of its body", 499) from None
    return b"".join(chunks)


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (once the body is read, the server's next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
