"""The batched writer: group commit for span batches.

Every ingest request hands its spans to one writer thread and waits. The thread takes all
batches waiting at that moment, writes them in one transaction, commits, and then wakes each
request. Many small requests cost one commit (one fsync on SQLite) instead of one each, and
SQLite never sees two writers contending for its lock. A request is acknowledged only after
the commit that contains it: success means durable and queryable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from sqlalchemy.exc import DataError

from proctor.core import Span
from proctor.store.spans import SpanStore, WriteResult, write_spans

log = logging.getLogger(__name__)

_STOP = object()


class BatchWriter:
    """One writer thread per process; ``submit`` returns a future resolved after commit."""

    def __init__(self, store: SpanStore, *, max_spans_per_commit: int = 50_000) -> None:
        self.store = store
        self.max_spans_per_commit = max_spans_per_commit
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="proctor-writer", daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self.commits = 0

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True

    def submit(self, batch: Sequence[Span]) -> Future[WriteResult]:
        fut: Future[WriteResult] = Future()
        if not batch:
            fut.set_result(WriteResult(0, 0))
            return fut
        self.start()
        self._queue.put((batch, fut))
        return fut

    def write(self, batch: Sequence[Span], timeout: float | None = 60.0) -> WriteResult:
        return self.submit(batch).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            group = [item]
            size = len(item[0])  # type: ignore[index]
            stop = False
            while size < self.max_spans_per_commit:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                group.append(more)
                size += len(more[0])  # type: ignore[index]
            self._commit(group)  # type: ignore[arg-type]
            if stop:
                return

    def _commit(self, group: list[tuple[Sequence[Span], Future[WriteResult]]], *, strip_nul: bool = False) -> None:
        try:
            results = []
            with self.store.engine.begin() as conn:
                for batch, _ in group:
                    results.append(write_spans(conn, batch, self.store.sql, strip_nul=strip_nul))
            self.commits += 1
        except Exception as exc:
            if len(group) > 1:
                # One bad batch must not fail the others: retry each in its own transaction.
                for one in group:
                    self._commit([one], strip_nul=strip_nul)
                return
            if not strip_nul and isinstance(exc, DataError) and "NUL" in str(exc):
                # PostgreSQL refuses NUL characters in text; SQLite takes them.
                self._commit(group, strip_nul=True)
                return
            log.exception("span batch write failed")
            group[0][1].set_exception(exc)
            return
        for (_, fut), res in zip(group, results, strict=True):
            fut.set_result(res)
