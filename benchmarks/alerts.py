"""Alert benchmark: evaluation cost per span with 50 rules, and time from an offending span's
arrival to the webhook's receipt.

1. Evaluation: 50 rules of every span-fed signal (cost rate, session cost, duration, tool
   failure rate, filtered span counts) with varied thresholds, groupings and windows, over a
   realistic stream (LLM and tool spans of 200 concurrent sessions), fed to the engine in
   batches as the pipeline hands them over. CPU time of ``AlertEngine.process_spans`` divided
   by spans. No notifications fire in the steady state (thresholds are out of reach), so this
   is the cost every span pays.
2. Latency: ``proctor serve`` in-process on a fresh SQLite database with a cost-spiral rule and
   a webhook notifier pointing at a receiver on loopback. For each trial, one OTLP request with
   a span whose cost crosses the line; the clock runs from sending the request to the webhook's
   receipt of the notification (so it includes the durable write, the engine's queue, storing
   the alert and the HTTP delivery).

Targets (issue 5): <= 20 µs of evaluation per span with 50 rules; <= 1 s span to notification.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from _common import free_port, machine_info
from proctor.core import Span
from proctor.semconv import encode_attributes
from proctor.telemetry.engine import AlertEngine
from proctor.telemetry.rules import load_rules_text

HEAD = """apiVersion: proctor/v1
kind: AlertRules
metadata: {name: bench}
spec:
  rules:
"""


def fifty_rules() -> str:
    rng = random.Random(5)
    lines = []
    for i in range(50):
        kind = i % 5
        if kind == 0:
            lines.append(f'{{id: rate-{i}, signal: session_cost_rate, window: {rng.choice(["1m", "5m"])}, '
                         f'when: "value > {rng.uniform(50, 100):.2f}"}}')
        elif kind == 1:
            lines.append(f'{{id: cost-{i}, signal: session_cost, when: "value > {rng.uniform(50, 100):.2f}"}}')
        elif kind == 2:
            lines.append(f'{{id: tools-{i}, signal: tool_failure_rate, window: 5m, group_by: '
                         f'[{rng.choice(["tool", "agent"])}], when: "count >= 1000 && value > 0.9"}}')
        elif kind == 3:
            lines.append(f'{{id: slow-{i}, signal: spans, filter: "span.kind == \'llm\' && span.duration_s > '
                         f'{rng.randint(60, 120)}", group_by: [agent], when: "value >= 5"}}')
        else:
            lines.append(f'{{id: long-{i}, signal: session_duration, when: "value > {rng.randint(3600, 7200)}"}}')
    return HEAD + "".join(f"    - {line}\n" for line in lines)


def stream(n: int, sessions: int = 200) -> list[Span]:
    rng = random.Random(1)
    now = time.time_ns()
    out = []
    for i in range(n):
        sid = f"s{rng.randrange(sessions)}"
        agent = ("triage", "refund", "research")[hash(sid) % 3]
        start = now + i * 1_000_000
        if rng.random() < 0.5:
            out.append(Span(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), name="chat", kind="llm",
                            start_ns=start, end_ns=start + rng.randint(200, 3000) * 1_000_000, session_id=sid,
                            agent_name=agent, model="gpt-4o-mini", cost_usd=rng.uniform(0.0001, 0.01),
                            input_tokens=800, output_tokens=200))
        else:
            tool = rng.choice(["crm.lookup", "kb.search", "send_email", "issue_refund"])
            out.append(Span(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), name=tool, kind="tool",
                            start_ns=start, end_ns=start + 20_000_000, session_id=sid, agent_name=agent,
                            tool_name=tool, status="error" if rng.random() < 0.05 else "ok"))
    return out


def evaluation(spans: int, batch: int) -> dict[str, float]:
    rules = load_rules_text(fifty_rules(), "bench.yaml")
    assert len(rules.rules) == 50
    eng = AlertEngine(rules)
    data = stream(spans)
    # warm up (groups created, conditions compiled)
    for i in range(0, min(len(data), 2000), batch):
        eng.process_spans(data[i:i + batch], data[i].end_ns)
    t0 = time.process_time()
    for i in range(0, len(data), batch):
        eng.process_spans(data[i:i + batch], data[i].end_ns)
    cpu = time.process_time() - t0
    return {"rules": 50, "spans": spans, "batch": batch, "us_per_span": cpu / spans * 1e6,
            "evaluations_per_span": eng.evaluations / (spans + min(spans, 2000)), "fired": len(eng.open_alerts())}


class Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[float, dict]]] = []
    event = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.got.append((time.perf_counter(), json.loads(body)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        Receiver.event.set()


def otlp(session: str, cost: float) -> bytes:
    now = time.time_ns()
    s = PbSpan(trace_id=secrets.token_bytes(16), span_id=secrets.token_bytes(8), name="chat gpt-4o-mini",
               start_time_unix_nano=now - 1_000_000, end_time_unix_nano=now, kind=PbSpan.SPAN_KIND_CLIENT)
    s.attributes.extend(encode_attributes({"gen_ai.operation.name": "chat", "gen_ai.conversation.id": session,
                                           "gen_ai.agent.name": "bench", "gen_ai.request.model": "gpt-4o-mini",
                                           "proctor.cost_usd": cost, "gen_ai.usage.input_tokens": 10,
                                           "gen_ai.usage.output_tokens": 10}))
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=encode_attributes({"service.name": "bench"})),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="bench"), spans=[s])])])
    return req.SerializeToString()


def latency(trials: int) -> dict[str, float]:
    from proctor.server.run import start_in_thread

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="proctor-bench-alerts-"))
    rules = tmp / "rules.yaml"
    rules.write_text(HEAD.replace("  rules:\n", f"  notifiers: [{{id: hook, type: webhook, url: "
                                                  f"'http://127.0.0.1:{receiver.server_port}/hook'}}]\n"
                                                  "  defaults: {notify: [hook]}\n  rules:\n")
                     + '    - {id: spiral, signal: session_cost_rate, window: 1m, when: "value > 1.0"}\n')
    import os

    os.environ["PROCTOR_ALERT_RULES"] = str(rules)
    port = free_port()
    server, _thread = start_in_thread(port=port, database_url=f"sqlite:///{tmp / 'proctor.db'}")
    times = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for i in range(trials):
                Receiver.event.clear()
                before = len(Receiver.got)
                t0 = time.perf_counter()
                r = c.post("/v1/traces", content=otlp(f"bench-{i}", 5.0),
                           headers={"content-type": "application/x-protobuf"})
                r.raise_for_status()
                if not Receiver.event.wait(10):
                    raise SystemExit(f"trial {i}: no notification within 10 s")
                arrived, doc = Receiver.got[before]
                assert doc["rule_id"] == "spiral" and doc["alerts"][0]["group"]["session"] == f"bench-{i}", doc
                times.append(arrived - t0)
                time.sleep(0.2)
    finally:
        server.should_exit = True
        receiver.shutdown()
        os.environ.pop("PROCTOR_ALERT_RULES", None)
    times.sort()
    return {"trials": trials, "p50_ms": statistics.median(times) * 1e3,
            "p95_ms": times[max(0, int(len(times) * 0.95) - 1)] * 1e3, "max_ms": times[-1] * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=100_000, help="spans through the engine (default 100000)")
    ap.add_argument("--batch", type=int, default=100, help="spans per batch handed to the engine (default 100)")
    ap.add_argument("--trials", type=int, default=20, help="offending spans sent for the latency (default 20)")
    args = ap.parse_args()
    info = machine_info()
    print(f"# alerts benchmark — {time.strftime('%Y-%m-%d')} — {info.get('cpu', '?')}, {info.get('cores', '?')} cores, "
          f"Python {sys.version.split()[0]}")
    ev = evaluation(args.spans, args.batch)
    lat = latency(args.trials)
    print()
    print("| measure | result | target |")
    print("|---|--:|---|")
    print(f"| evaluation per span, 50 rules, batches of {ev['batch']} ({ev['spans']:,} spans) | "
          f"{ev['us_per_span']:.1f} µs | ≤ 20 µs |")
    print(f"| rule evaluations per span (rules sharing aggregations are judged per group and batch) | "
          f"{ev['evaluations_per_span']:.2f} | |")
    print(f"| offending span sent → webhook received, p50 / p95 / max ({lat['trials']} trials) | "
          f"{lat['p50_ms']:.0f} / {lat['p95_ms']:.0f} / {lat['max_ms']:.0f} ms | ≤ 1000 ms |")


if __name__ == "__main__":
    main()
