"""A lightweight recorder for the spans the SDK makes itself (tool calls).

An OpenTelemetry SDK span costs ~35-60 µs on the caller's thread here (attribute cleaning,
locks, processor fan-out). Tool calls are the SDK's hot path, so they are recorded as plain
tuples (~10 µs) and turned into OTLP protobuf in a worker thread, then handed to the same
exporter as everything else. Context still propagates: while a tool runs, a non-recording
span with its ids is current, so spans an instrumented library opens inside the tool (an
HTTP call, an LLM call) nest under it.

Trade-off: these spans do not pass through other span processors added to the provider.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from proctor.sdk.resources import Identity, identity_attributes, identity_of
from proctor.semconv import encode_attributes, encode_value

log = logging.getLogger("proctor.sdk")

# (trace_id, span_id, parent_span_id or 0, name, start_ns, end_ns, attributes,
#  error: (type name, message) or None). Span events other than the error ride in the
#  attributes under EVENTS_KEY as [(name, time_ns, attributes)]; encode() moves them out.
EVENTS_KEY = "\x00events"
Record = tuple[int, int, int, str, int, int, dict[str, Any], tuple[str, str] | None]


class EncodedSink(Protocol):
    def export_encoded(self, body: bytes) -> None: ...


def encode(records: list[Record], resource: dict[str, Any], scope: str = "proctor.sdk") -> bytes:
    """An ExportTraceServiceRequest; each agent version's spans under a resource naming it."""
    groups: dict[Identity, list[Span]] = {}
    for tid, sid, pid, name, start, end, attrs, error in records:
        s = Span(
            trace_id=tid.to_bytes(16, "big"),
            span_id=sid.to_bytes(8, "big"),
            parent_span_id=pid.to_bytes(8, "big") if pid else b"",
            name=name,
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start,
            end_time_unix_nano=end,
        )
        extra = attrs.pop(EVENTS_KEY, None) if EVENTS_KEY in attrs else None
        s.attributes.extend(encode_attributes(attrs))
        for ev_name, ev_time, ev_attrs in extra or ():
            ev = s.events.add()
            ev.name = ev_name
            ev.time_unix_nano = ev_time
            ev.attributes.extend(encode_attributes(ev_attrs))
        if error is None:
            s.status.CopyFrom(Status(code=Status.STATUS_CODE_OK))
        else:
            etype, emsg = error
            s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=f"{etype}: {emsg}"))
            ev = s.events.add()
            ev.name = "exception"
            ev.time_unix_nano = end
            ev.attributes.extend(
                [KeyValue(key="exception.type", value=encode_value(etype)),
                 KeyValue(key="exception.message", value=encode_value(emsg))]
            )
        groups.setdefault(identity_of(attrs), []).append(s)
    base = encode_attributes(resource)
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[*base, *identity_attributes(ident)]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope), spans=spans)],
            )
            for ident, spans in groups.items()
        ]
    )
    return req.SerializeToString()


class SpanRecorder:
    """Queue of finished records; a worker thread encodes and exports them in batches."""

    def __init__(self, sink: EncodedSink, resource: dict[str, Any], *, max_queue: int = 100_000,
                 batch_size: int = 512, delay_s: float = 0.5) -> None:
        self.sink = sink
        self.resource = resource
        self.batch_size = batch_size
        self.delay_s = delay_s
        self._queue: collections.deque[Record] = collections.deque(maxlen=max_queue)
        self.dropped = 0
        self._reported_dropped = 0
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="proctor-recorder", daemon=True)
        self._thread.start()

    def record(self, rec: Record) -> None:
        """Called on the agent's thread: one deque append (thread-safe, never blocks).

        When the queue is full (the exporter cannot keep up) the oldest record is dropped
        and counted; the worker logs the count."""
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1  # an unlocked count: exact enough for a warning
        queue.append(rec)
        if len(queue) >= self.batch_size:
            self._wake.set()

    def _drain(self) -> None:
        while self._queue:
            batch: list[Record] = []
            try:
                while len(batch) < self.batch_size:
                    batch.append(self._queue.popleft())
            except IndexError:
                pass
            if batch:
                try:
                    self.sink.export_encoded(encode(batch, self.resource))
                except Exception:  # the sink spools or logs; never let the worker die
                    log.exception("proctor recorder could not export %d span(s)", len(batch))

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.delay_s)
            self._wake.clear()
            self._idle.clear()
            self._drain()
            if self.dropped > self._reported_dropped:
                log.warning("proctor recorder queue full: %d span(s) dropped so far", self.dropped)
                self._reported_dropped = self.dropped
            self._idle.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record so far is exported (the queue is empty and the worker idle)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._queue and self._idle.is_set():
                return True
            self._wake.set()
            time.sleep(0.005)
        return False

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        self._stop = True
        self._wake.set()
        self._thread.join(timeout_s)
