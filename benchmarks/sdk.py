"""SDK overhead on the agent's thread per recorded span.

Measures the wall time a loop of calls spends on the calling thread:

- ``plain call``: the function alone (the floor);
- ``otel span``: a bare OpenTelemetry SDK span around it (start + end + BatchSpanProcessor
  enqueue), for comparison: what an SDK built on OTel spans pays before doing anything;
- ``@proctor.tool`` inside ``proctor.session`` (arguments and result serialized to JSON,
  session attributes stamped), with export switched off (a null sink) — Proctor's own cost;
- the same exporting for real to a running Proctor server: encoding and sending run in a
  worker thread, so what this adds on the agent's thread is contention for the GIL.

Run:  .venv/bin/python benchmarks/sdk.py [--calls 20000]
Prints a table. Not a test: numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullSink:
    def export_encoded(self, body: bytes) -> None:
        pass


def per_call_us(fn: Callable[[int], object], calls: int, repeats: int = 5) -> tuple[float, float]:
    """Median and best of ``repeats`` runs, in µs per call."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(i)
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(runs), min(runs)


def lookup(customer_id: int, region: str = "eu") -> dict[str, object]:
    return {"id": customer_id, "region": region, "tier": "gold"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000, help="calls per timed run, 5 runs each (max 200k)")
    args = ap.parse_args()
    calls = max(1000, min(args.calls, 200_000))

    import proctor
    from proctor.sdk import setup
    from proctor.sdk.recorder import SpanRecorder

    rows: list[tuple[str, float, float]] = [("plain call", *per_call_us(lambda i: lookup(i), calls))]

    bare = TracerProvider()
    bare.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=calls * 6))
    tracer = bare.get_tracer("bench")

    def otel_span(i: int) -> None:
        with tracer.start_as_current_span("execute_tool lookup"):
            lookup(i)

    rows.append(("otel SDK span (for comparison)", *per_call_us(otel_span, calls)))
    bare.shutdown()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp())
    # the server runs in its own process, as in a deployment: it must not share our GIL
    server = subprocess.Popen(
        [sys.executable, "-m", "proctor.cli.main", "serve", "--port", str(port), "--db", f"sqlite:///{tmp}/bench.db"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert server.stdout is not None and "listening" in server.stdout.readline()
    proctor.init(url=f"http://127.0.0.1:{port}", spool_dir=tmp / "spool", instrument=False, service_name="bench")
    tool = proctor.tool(lookup)
    runtime = setup._runtime
    assert runtime is not None
    real_recorder = runtime.recorder
    # Swap in a recorder whose worker never wakes during the loop, to see the agent-thread cost
    # alone (benchmark only); the queue is emptied between runs so memory does not pile up.
    idle = SpanRecorder(NullSink(), {}, max_queue=calls, batch_size=10**9, delay_s=3600)
    runtime.recorder = idle

    def tool_call_idle(i: int) -> None:
        if i == 0:
            idle._queue.clear()
        tool(i)

    with proctor.session(agent="bench", user="u-1"):
        rows.append(("@proctor.tool in a session, export off", *per_call_us(tool_call_idle, calls)))
    idle._queue.clear()
    idle.shutdown(1)
    runtime.recorder = real_recorder
    with proctor.session(agent="bench", user="u-1"):
        rows.append(("@proctor.tool in a session, exporting", *per_call_us(lambda i: tool(i), calls)))
    t0 = time.perf_counter()
    proctor.flush(60)
    drain = time.perf_counter() - t0
    proctor.shutdown()
    server.terminate()
    server.wait(10)

    print(f"# SDK overhead per recorded span — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {calls} calls x 5 runs")
    print(f"| {'what runs on the agent thread':42} | median µs/call | best µs/call |")
    print(f"|{'-' * 44}|---------------:|-------------:|")
    for name, med, best in rows:
        print(f"| {name:42} | {med:14.1f} | {best:12.1f} |")
    floor = rows[0][1]
    print(f"\n@proctor.tool adds {rows[2][1] - floor:.1f} µs per call on the agent's thread with export off, "
          f"{rows[3][1] - floor:.1f} µs while exporting to a server process (the encoding worker shares the GIL; "
          f"the last {5 * calls} spans finished exporting {drain:.2f} s after the loop).")


if __name__ == "__main__":
    main()
