"""Capture what each instrumentation dialect really emits, as OTLP JSON fixtures.

Starts the fake OpenAI server and a minimal OTLP/HTTP receiver on 127.0.0.1, runs every
emitter in ``emitters/`` (non-streamed and streamed) as a subprocess, and writes what each run
exported to ``tests/fixtures/otlp/<dialect>[-stream].json`` as one ``ExportTraceServiceRequest``
in standard OTLP JSON (camelCase names, integer enums, hex trace/span ids).

Usage (the emitters need the instrumentation packages, so use that venv's interpreter)::

    .venv/bin/python tests/conformance/capture.py [--only DIALECT ...] [--events]

``--events`` additionally runs the openai-v2 emitter with content capture ``EVENT_ONLY``, where
message content goes to OTel *log records* instead of span attributes, and writes spans and
logs to ``tests/fixtures/otlp/events/``. That directory is kept apart so globbing
``otlp/*.json`` only finds the ten span fixtures.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_openai import LoopbackHandler, running_fake_server, serving  # noqa: E402 - needs the sys.path entry above

EMITTERS_DIR = HERE / "emitters"
FIXTURES_DIR = HERE.parent / "fixtures" / "otlp"
DIALECTS = (
    "openinference_openai",
    "openllmetry_openai",
    "otel_genai_openai_v2",
    "openai_agents_openinference",
    "pydantic_ai",
)
DEFAULT_PYTHON = sys.executable
EMITTER_TIMEOUT_S = 180


@dataclass
class _Received:
    """Everything the receiver got since the last ``reset``."""

    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    logs: list[ExportLogsServiceRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.traces.clear()
            self.logs.clear()


class _OtlpHandler(LoopbackHandler):
    server: _OtlpServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        path = self.path.split("?", 1)[0]
        received = self.server.received
        if path == "/v1/traces":
            trace_request = ExportTraceServiceRequest.FromString(raw)
            with received.lock:
                received.traces.append(trace_request)
            response = ExportTraceServiceResponse().SerializeToString()
        elif path == "/v1/logs":
            logs_request = ExportLogsServiceRequest.FromString(raw)
            with received.lock:
                received.logs.append(logs_request)
            response = ExportLogsServiceResponse().SerializeToString()
        else:
            self._send(404, b"", "text/plain")
            return
        self._send(200, response, "application/x-protobuf")


class _OtlpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.received = _Received()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def running_otlp_receiver() -> AbstractContextManager[_OtlpServer]:
    return serving(_OtlpServer())


# --- OTLP JSON shaping -------------------------------------------------------------------------


def merge_traces(requests: list[ExportTraceServiceRequest]) -> ExportTraceServiceRequest:
    """Merge batches into one request, grouping by resource and scope and ordering spans by start.

    Batching is an exporter detail (BatchSpanProcessor may split a run over several POSTs), so
    folding it away makes fixtures easier to read without changing any span.
    """
    merged = ExportTraceServiceRequest()
    resources: dict[bytes, Any] = {}
    scopes: dict[tuple[bytes, bytes, str], Any] = {}
    for request in requests:
        for rs in request.resource_spans:
            rkey = rs.resource.SerializeToString(deterministic=True)
            if rkey not in resources:
                target = merged.resource_spans.add()
                target.resource.CopyFrom(rs.resource)
                target.schema_url = rs.schema_url
                resources[rkey] = target
            for ss in rs.scope_spans:
                skey = (rkey, ss.scope.SerializeToString(deterministic=True), ss.schema_url)
                if skey not in scopes:
                    scope_target = resources[rkey].scope_spans.add()
                    scope_target.scope.CopyFrom(ss.scope)
                    scope_target.schema_url = ss.schema_url
                    scopes[skey] = scope_target
                scopes[skey].spans.extend(ss.spans)
    for scope_spans in scopes.values():
        ordered = sorted(scope_spans.spans, key=lambda s: (s.start_time_unix_nano, s.end_time_unix_nano))
        del scope_spans.spans[:]
        scope_spans.spans.extend(ordered)
    return merged


def merge_logs(requests: list[ExportLogsServiceRequest]) -> ExportLogsServiceRequest:
    merged = ExportLogsServiceRequest()
    for request in requests:
        merged.resource_logs.extend(request.resource_logs)
    return merged


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_ids(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if obj.get(key):
            obj[key] = _b64_to_hex(obj[key])


def to_otlp_json(message: ExportTraceServiceRequest | ExportLogsServiceRequest) -> dict[str, Any]:
    """Protobuf -> OTLP JSON. The OTLP spec wants integer enums and hex ids, unlike proto3 JSON."""
    data: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=False, use_integers_for_enums=True
    )
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                _hex_ids(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", []):
                    _hex_ids(link, ("traceId", "spanId"))
    for rl in data.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for record in sl.get("logRecords", []):
                _hex_ids(record, ("traceId", "spanId"))
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- Running emitters --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    name: str
    ok: bool
    spans: int
    logs: int
    detail: str


def _span_names(request: ExportTraceServiceRequest) -> list[str]:
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _wait_quiet(received: _Received, settle_s: float = 0.3) -> None:
    """Emitters flush before exiting, but give in-flight POST handlers a moment to store them."""
    deadline = time.monotonic() + 5
    last = -1
    while time.monotonic() < deadline:
        with received.lock:
            count = len(received.traces) + len(received.logs)
        if count == last:
            return
        last = count
        time.sleep(settle_s)


def run_emitter(
    python: str,
    dialect: str,
    *,
    stream: bool,
    openai_base_url: str,
    otlp: _OtlpServer,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], ExportTraceServiceRequest, ExportLogsServiceRequest]:
    otlp.received.reset()
    cmd = [
        python,
        str(EMITTERS_DIR / f"{dialect}.py"),
        "--openai-base-url",
        openai_base_url,
        "--otlp-endpoint",
        f"{otlp.base_url}/v1/traces",
        *(["--stream"] if stream else []),
        *extra_args,
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=EMITTER_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )
    _wait_quiet(otlp.received)
    with otlp.received.lock:
        traces = merge_traces(list(otlp.received.traces))
        logs = merge_logs(list(otlp.received.logs))
    return proc, traces, logs


def _count_logs(logs: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in logs.resource_logs for sl in rl.scope_logs)


def capture(python: str, dialects: list[str], out_dir: Path, events: bool) -> list[RunResult]:
    results: list[RunResult] = []
    with running_fake_server() as fake, running_otlp_receiver() as otlp:
        for dialect in dialects:
            for stream in (False, True):
                name = f"{dialect}{'-stream' if stream else ''}"
                fake.requests.clear()
                proc, traces, logs = run_emitter(
                    python, dialect, stream=stream, openai_base_url=fake.base_url, otlp=otlp
                )
                names = _span_names(traces)
                ok = proc.returncode == 0 and bool(names)
                if ok:
                    write_json(out_dir / f"{name}.json", to_otlp_json(traces))
                detail = f"rc={proc.returncode} requests={len(fake.requests)} spans={names}"
                if not ok:
                    detail += f"\n--- stderr ---\n{proc.stderr[-4000:]}"
                results.append(RunResult(name, ok, len(names), _count_logs(logs), detail))
        if events:
            for stream in (False, True):
                name = f"otel_genai_openai_v2-events{'-stream' if stream else ''}"
                proc, traces, logs = run_emitter(
                    python,
                    "otel_genai_openai_v2",
                    stream=stream,
                    openai_base_url=fake.base_url,
                    otlp=otlp,
                    extra_args=("--events",),
                )
                ok = proc.returncode == 0 and bool(_span_names(traces)) and _count_logs(logs) > 0
                if ok:
                    write_json(out_dir / "events" / f"{name}.spans.json", to_otlp_json(traces))
                    write_json(out_dir / "events" / f"{name}.logs.json", to_otlp_json(logs))
                detail = f"rc={proc.returncode} spans={_span_names(traces)}"
                if not ok:
                    detail += f"\n--- stderr ---\n{proc.stderr[-4000:]}"
                results.append(RunResult(name, ok, len(_span_names(traces)), _count_logs(logs), detail))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=DIALECTS, help="capture only these dialects")
    parser.add_argument(
        "--python",
        default=os.environ.get("PROCTOR_CONFORMANCE_PYTHON")
        or (DEFAULT_PYTHON if Path(DEFAULT_PYTHON).exists() else sys.executable),
        help="interpreter with the instrumentation packages installed",
    )
    parser.add_argument("--out-dir", type=Path, default=FIXTURES_DIR)
    parser.add_argument(
        "--events", action="store_true", help="also capture openai-v2's EVENT_ONLY (log record) content mode"
    )
    args = parser.parse_args()
    results = capture(args.python, list(args.only or DIALECTS), args.out_dir, args.events)
    for r in results:
        print(f"{'OK  ' if r.ok else 'FAIL'} {r.name}: spans={r.spans} logs={r.logs} {r.detail}")
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results) - len(failed)} captured, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
