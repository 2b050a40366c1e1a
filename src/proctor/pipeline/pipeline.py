"""The event pipeline: normalize -> processors, in order -> sinks.

Every source (the OTLP receiver, the SDK's embedded mode, later the gateway) hands decoded
spans to ``Pipeline.submit``. Processors are small objects with one method, ``process(batch)``,
that read and fill canonical fields; adding a signal means adding a processor. The store
writer is the durable sink: ``submit`` returns a future that resolves after the commit.
Live subscribers are told about a batch only after it is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol

from proctor.core import Span
from proctor.pipeline.cost import CostProcessor
from proctor.semconv import normalize
from proctor.store import BatchWriter, WriteResult

log = logging.getLogger(__name__)


class Processor(Protocol):
    def process(self, batch: list[Span]) -> None: ...


class Pipeline:
    def __init__(self, writer: BatchWriter, processors: Sequence[Processor] | None = None) -> None:
        self.writer = writer
        self.processors: list[Processor] = list(processors) if processors is not None else [CostProcessor()]
        self._subscribers: list[Callable[[list[Span]], None]] = []

    def subscribe(self, callback: Callable[[list[Span]], None]) -> None:
        """Call ``callback(batch)`` after each batch is durably written (in the writer's thread)."""
        self._subscribers.append(callback)

    def prepare(self, batch: list[Span]) -> list[Span]:
        for s in batch:
            normalize(s)
        for p in self.processors:
            p.process(batch)
        return batch

    def submit(self, batch: list[Span]) -> Future[WriteResult]:
        """Normalize and process ``batch`` (in the caller's thread), then queue it for the store."""
        self.prepare(batch)
        fut = self.writer.submit(batch)
        if self._subscribers:
            fut.add_done_callback(lambda f: self._notify(batch, f))
        return fut

    def _notify(self, batch: list[Span], fut: Future[WriteResult]) -> None:
        if fut.exception() is not None:
            return
        for cb in self._subscribers:
            try:
                cb(batch)
            except Exception:
                log.exception("pipeline subscriber failed")
