"""Span exporters for the SDK: to a Proctor server over OTLP/HTTP, or into the local store.

Both run in the BatchSpanProcessor's worker thread, never on the agent's thread, and never
raise into agent code. The HTTP exporter sends each batch once; if the server is down or
answers with a retryable error, the batch goes to a bounded on-disk spool and a background
thread resends it with exponential backoff. When the spool is full the oldest batches are
dropped and counted; the count is logged.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from proctor.sdk.resources import hoist_agent_identity

log = logging.getLogger("proctor.sdk")

_RETRYABLE = frozenset({408, 429, 502, 503, 504})


class Spool:
    """A directory of serialized OTLP requests waiting to be sent, oldest first, bounded in bytes."""

    def __init__(self, directory: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self._seq = 0
        self._lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True)

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.otlp"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files() if p.exists())

    def put(self, body: bytes) -> None:
        with self._lock:
            self._seq += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.otlp"
            files = self.files()
            total = sum(p.stat().st_size for p in files)
            while files and total + len(body) > self.max_bytes:
                oldest = files.pop(0)
                total -= oldest.stat().st_size
                oldest.unlink(missing_ok=True)
                self.dropped_batches += 1
            if len(body) > self.max_bytes:
                self.dropped_batches += 1
                return
            tmp = self.dir / (name + ".tmp")
            tmp.write_bytes(body)
            tmp.replace(self.dir / name)  # atomic: a reader never sees half a batch


class ProctorHTTPExporter(SpanExporter):
    """OTLP/HTTP protobuf exporter with a disk spool and backoff retries."""

    def __init__(
        self,
        url: str,
        *,
        spool_dir: Path,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        spool_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.base_url = url.rstrip("/")
        self.endpoint = self.base_url + "/v1/traces"
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        headers = {"content-type": "application/x-protobuf", "content-encoding": "gzip", **auth}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        # the server's REST API (the registry, for proctor.session(agent, env)): same credentials
        self.api = httpx.Client(base_url=self.base_url, headers=auth, timeout=timeout_s)
        self.spool = Spool(spool_dir, spool_max_bytes)
        self.max_backoff_s = max_backoff_s
        self.sent_batches = 0
        self._spool_lock = threading.Lock()
        self._auth_refused: int | None = None  # the 401/403 last reported, so it is logged once
        self._reported_drops = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._retry = threading.Thread(target=self._retry_loop, name="proctor-spool", daemon=True)
        self._retry.start()
        if self.spool.files():
            self._wake.set()  # batches left by an earlier run

    def _send(self, body: bytes) -> bool:
        """True when the server took the batch (or refused it for good); False to retry later."""
        try:
            r = self._client.post(self.endpoint, content=body)
        except httpx.HTTPError:
            return False
        if r.status_code < 300:
            self.sent_batches += 1
            self._auth_refused = None
            return True
        if r.status_code in _RETRYABLE:
            return False
        if r.status_code in (401, 403):
            # a missing, revoked or under-privileged key: fixable without losing spans, so keep
            # them in the spool (bounded) and say so once per change of status
            if self._auth_refused != r.status_code:
                log.warning("proctor server refused the API key (%s): %s — span batches are spooled until "
                            "PROCTOR_API_KEY holds a key with the operator role", r.status_code, r.text[:200])
            self._auth_refused = r.status_code
            return False
        self._auth_refused = None
        # 400/413: the server will never take this batch; keeping it would block the spool.
        log.warning("proctor server refused a span batch (%s): %s", r.status_code, r.text[:300])
        return True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.export_encoded(hoist_agent_identity(encode_spans(spans)).SerializeToString())
        except Exception:  # never into agent code
            log.exception("proctor exporter failed; spans dropped")
        return SpanExportResult.SUCCESS

    def export_encoded(self, request: bytes) -> None:
        """Send one serialized ExportTraceServiceRequest, or spool it for later."""
        body = gzip.compress(request, compresslevel=1)
        if self.spool.files() or not self._send(body):
            # keep order: while anything waits in the spool, new batches queue behind it
            self.spool.put(body)
            self._wake.set()
        self._report_drops()

    def _report_drops(self) -> None:
        dropped = self.spool.dropped_batches
        if dropped > self._reported_drops:
            log.warning(
                "proctor spool full: %d span batch(es) dropped so far (server unreachable at %s)",
                dropped, self.endpoint,
            )
            self._reported_drops = dropped

    def _retry_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            self._wake.wait(timeout=self.max_backoff_s)
            self._wake.clear()
            while not self._stop.is_set():
                sent = self._send_head()
                if sent is None:
                    backoff = 0.5
                    break
                if sent:
                    backoff = 0.5
                    continue
                self._report_drops()
                # exponential backoff with jitter, bounded
                self._stop.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff_s)

    def flush_spool(self, timeout_s: float = 5.0) -> bool:
        """Try to send what waits in the spool; True when it is empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sent = self._send_head()
            if sent is None:
                return True
            if not sent:
                return False
        return not self.spool.files()

    def _send_head(self) -> bool | None:
        """Send the oldest spooled batch and remove it once taken. None: the spool is empty.

        One sender at a time: the retry thread and flush_spool() (shutdown, force_flush) would
        otherwise both read the same file and send the batch twice."""
        with self._spool_lock:
            files = self.spool.files()
            if not files:
                return None
            try:
                body = files[0].read_bytes()
            except FileNotFoundError:
                return True  # taken meanwhile (another exporter on the same spool): look again
            if not self._send(body):
                return False
            files[0].unlink(missing_ok=True)
            return True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.flush_spool(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.flush_spool(2.0)  # what is left stays on disk for the next run
        self._stop.set()
        self._wake.set()
        self._retry.join(timeout=2)
        self._client.close()
        self.api.close()


class EmbeddedExporter(SpanExporter):
    """Writes spans straight into the local store through the same pipeline as the server."""

    def __init__(self, database_url: str | None = None) -> None:
        from proctor.pipeline import Pipeline
        from proctor.store import BatchWriter, SpanStore, open_engine

        self.engine = open_engine(database_url)
        self.writer = BatchWriter(SpanStore(self.engine))
        self.pipeline = Pipeline(self.writer)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.export_encoded(hoist_agent_identity(encode_spans(spans)).SerializeToString())
        except Exception:
            log.exception("proctor could not store spans locally; spans dropped")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def export_encoded(self, request: bytes) -> None:
        from proctor.semconv import decode_protobuf

        batch = decode_protobuf(request)
        self.pipeline.submit(batch.spans).result(timeout=30)
        if batch.rejected:
            log.warning("proctor rejected %d span(s): %s", len(batch.rejected), batch.rejected[:3])

    def shutdown(self) -> None:
        self.writer.close()
        self.engine.dispose()
