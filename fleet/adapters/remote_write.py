"""fleet's own series into the stack's Prometheus, by Prometheus's remote-write protocol (its receiver is on,
`--web.enable-remote-write-receiver`): a WriteRequest (protobuf, built with the protobuf library from the
protocol's own message definitions) compressed with snappy, POSTed to /api/v1/write on the port fleet
already queries. Pushes run on a thread of their own and never hold up the rollout; a failed push is
reported, never a verdict.
"""
import logging
import queue
import threading
import time

import httpx
import snappy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .endpoints import Endpoints, Unanswered
from .prometheus import credentials, tls
from .within import request_within

log = logging.getLogger("fleet.remote_write")
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def _messages():
    """prometheus.WriteRequest and its parts (prompb/remote.proto, types.proto: the fields remote write uses)."""
    f = descriptor_pb2.FileDescriptorProto(name="fleet_prompb.proto", package="fleet_prompb", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    for name, fields in (("Label", [("name", 1, T.TYPE_STRING, None), ("value", 2, T.TYPE_STRING, None)]),
                         ("Sample", [("value", 1, T.TYPE_DOUBLE, None), ("timestamp", 2, T.TYPE_INT64, None)]),
                         ("TimeSeries", [("labels", 1, T.TYPE_MESSAGE, "Label"), ("samples", 2, T.TYPE_MESSAGE, "Sample")]),
                         ("WriteRequest", [("timeseries", 1, T.TYPE_MESSAGE, "TimeSeries")])):
        m = f.message_type.add(name=name)
        for field, number, kind, of in fields:
            m.field.add(name=field, number=number, type=kind,
                        label=T.LABEL_REPEATED if of else T.LABEL_OPTIONAL,
                        type_name=f".fleet_prompb.{of}" if of else None)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fleet_prompb.WriteRequest"))


WriteRequest = _messages()


def encode(series: list[tuple[str, dict, float]], at: float) -> bytes:
    """[(metric name, labels, value)] at epoch seconds `at`, as a snappy-compressed WriteRequest."""
    request = WriteRequest()
    for name, labels, value in series:
        ts = request.timeseries.add()
        for k, v in sorted({"__name__": name, **labels}.items()):  # remote write wants labels sorted by name
            ts.labels.add(name=k, value=str(v))
        ts.samples.add(value=float(value), timestamp=int(at * 1000))
    return snappy.compress(request.SerializeToString())


class Pusher:
    """Pushes batches of series to Prometheus in order, on a thread of its own; never raises."""

    def __init__(self, endpoints: Endpoints, on_failure=lambda message: None, timeout: float = 2.0):
        self.endpoints, self.on_failure, self.timeout = endpoints, on_failure, timeout
        self.failures: list[str] = []
        self.pushed = 0
        self._queue: queue.Queue = queue.Queue()
        self._lock, self._at = threading.Lock(), 0.0
        self._thread = threading.Thread(target=self._run, name="fleet-remote-write", daemon=True)
        self._thread.start()

    def push(self, series: list[tuple[str, dict, float]]) -> None:
        with self._lock:  # each batch a later millisecond: Prometheus refuses a second sample at one time
            self._at = max(time.time(), self._at + 0.001)
            self._queue.put((series, self._at))

    def close(self, wait: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(wait)

    def _run(self) -> None:
        auth, verify = credentials(), tls()
        while (item := self._queue.get()) is not None:
            series, at = item
            body = encode(series, at)
            try:
                r = self.endpoints.first(lambda url: request_within("POST", f"{url}/api/v1/write", self.timeout,
                                                                    content=body, headers=HEADERS, auth=auth,
                                                                    verify=verify), 2)
                if r.status_code >= 300:
                    raise Unanswered(f"{r.status_code}: {r.text.strip()[:200]}")
                self.pushed += 1
            except (Unanswered, httpx.HTTPError) as e:
                message = f"fleet's series not written to Prometheus: {e}"[:300]
                self.failures.append(message)
                log.warning(message)
                self.on_failure(message)
