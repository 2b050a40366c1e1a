"""The SDK as an agent author uses it. Each scenario runs in its own process, as an agent would:
``proctor.init()`` sets process-wide OpenTelemetry state."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from proctor.sdk.export import ProctorHTTPExporter
from proctor.server.run import start_in_thread
from proctor.store import SpanStore, TraceFilter, open_engine
from proctor.traces import trace_detail, trace_list

from conftest import free_port, wait_until

AGENT = textwrap.dedent(
    """
    import sys, time, proctor

    @proctor.tool(side_effect="read")
    def lookup_customer(email: str, verbose: bool = False) -> dict:
        "Find a customer by email."
        return {"id": 7, "email": email}

    @proctor.tool
    async def send_email(to: str) -> str:
        raise ConnectionError("smtp down")

    proctor.init(service_name="sdk-test", instrument=False)
    import asyncio
    with proctor.session(agent="support", version="1.2.0", user="u-9", session_id="sess-sdk") as s:
        lookup_customer("a@b.c")
        lookup_customer.call_with_id("call_1", "d@e.f", verbose=True)
        try:
            asyncio.run(send_email("x@y.z"))
        except ConnectionError:
            print("error re-raised")
    """
)


def run_agent(code: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )


def test_embedded_mode_records_a_session_with_tools_args_results_and_errors(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'agent.db'}"
    proc = run_agent(AGENT, {"PROCTOR_DATABASE_URL": db, "PROCTOR_URL": ""}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "error re-raised" in proc.stdout

    store = SpanStore(open_engine(db))
    [t] = trace_list(store, TraceFilter(agent="support"))["traces"]
    assert t["session_id"] == "sess-sdk" and t["span_count"] == 4 and t["error_count"] == 1
    spans = trace_detail(store, t["trace_id"])["spans"]
    root, *tools = spans
    assert (root["kind"], root["name"], root["depth"]) == ("agent", "invoke_agent support", 0)
    assert [s["tool_name"] for s in tools] == ["lookup_customer", "lookup_customer", "send_email"]
    assert all(s["depth"] == 1 and s["agent_name"] == "support" and s["session_id"] == "sess-sdk" for s in tools)
    first = store.get_span(tools[0]["span_id"])
    assert first is not None
    assert first["tool_arguments"] == '{"email":"a@b.c"}'
    assert first["tool_result"] == '{"id":7,"email":"a@b.c"}'
    assert first["attributes"]["proctor.tool.side_effect"] == "read"
    assert first["attributes"]["user.id"] == "u-9" and first["agent_version"] == "1.2.0"
    assert tools[1]["tool_call_id"] == "call_1"
    failed = store.get_span(tools[2]["span_id"])
    assert failed is not None
    assert failed["status"] == "error" and failed["error_type"] == "ConnectionError"
    assert failed["error_message"] == "smtp down"


SPOOLING_AGENT = textwrap.dedent(
    """
    import sys, time, proctor, proctor.sdk as sdk
    proctor.init(service_name="spool-test", instrument=False)

    @proctor.tool
    def step(i: int) -> int:
        return i

    t0 = time.perf_counter()
    with proctor.session(agent="offline", session_id="sess-offline"):
        for i in range(50):
            step(i)
    print("recorded in %.3f s" % (time.perf_counter() - t0), flush=True)
    sdk.flush(5)
    print("flushed", flush=True)
    sys.stdin.readline()  # the test starts the server, then wakes us
    exporter = sdk.setup._runtime.exporter
    ok = exporter.flush_spool(20)
    print("delivered" if ok else "still spooled", flush=True)
    """
)


def test_spans_recorded_while_the_server_is_down_are_spooled_and_delivered_later(tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'server.db'}"
    spool = tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", SPOOLING_AGENT], cwd=tmp_path, text=True, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PROCTOR_URL": f"http://127.0.0.1:{port}", "PROCTOR_SPOOL_DIR": str(spool)},
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        recorded = proc.stdout.readline()
        assert recorded.startswith("recorded in"), proc.stderr.read() if proc.stderr else ""
        assert float(recorded.split()[2]) < 2.0  # the agent was never held up by the dead server
        assert proc.stdout.readline().strip() == "flushed"
        assert wait_until(lambda: any(spool.glob("*.otlp")), timeout=10), "nothing was spooled"

        server, _thread = start_in_thread(port=port, database_url=db)
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "delivered"
            store = SpanStore(open_engine(db))
            [t] = trace_list(store, TraceFilter(session_id="sess-offline"))["traces"]
            assert t["span_count"] == 51
            assert not any(spool.glob("*.otlp"))
        finally:
            server.should_exit = True
    finally:
        proc.kill()
        proc.wait()


def test_a_full_spool_drops_the_oldest_batches_and_says_how_many(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens here
    exporter = ProctorHTTPExporter(f"http://127.0.0.1:{port}", spool_dir=tmp_path, spool_max_bytes=2_000,
                                   timeout_s=0.5)
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    try:
        with caplog.at_level(logging.WARNING, logger="proctor.sdk"):
            for i in range(30):
                span = tracer.start_span(f"step {i}", attributes={"payload": "x" * 200})
                span.end()
                exporter.export([span])  # type: ignore[list-item]
        assert exporter.spool.size() <= 2_000
        assert exporter.spool.dropped_batches > 0
        assert "dropped" in caplog.text
    finally:
        exporter.shutdown()


def test_a_refused_batch_is_not_retried_forever(tmp_path: Path) -> None:
    port = free_port()
    server, _ = start_in_thread(port=port, database_url=f"sqlite:///{tmp_path / 's.db'}")
    try:
        exporter = ProctorHTTPExporter(f"http://127.0.0.1:{port}", spool_dir=tmp_path / "spool")
        exporter.spool.put(b"this is not gzip")  # the server answers 400 for it
        assert exporter.flush_spool(5)
        exporter.shutdown()
    finally:
        server.should_exit = True


def test_the_sdk_never_raises_into_agent_code_when_arguments_cannot_be_serialized(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import proctor
        proctor.init(instrument=False)
        class Weird:
            def __repr__(self): raise RuntimeError("no repr")
        @proctor.tool
        def f(x): return x
        with proctor.session(agent="a"):
            assert isinstance(f(Weird()), Weird)
        print("ok")
        """
    )
    proc = run_agent(code, {"PROCTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PROCTOR_URL": ""}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_a_server_in_the_same_process_as_the_sdk_does_not_trace_itself(tmp_path: Path) -> None:
    """FastAPI traces requests when a global tracer provider exists; ours must not, or every
    export would produce more spans to export (a feedback loop)."""
    code = textwrap.dedent(
        f"""
        import proctor, sqlite3
        from proctor.server.run import start_in_thread
        server, _ = start_in_thread(port={free_port()}, database_url="sqlite:///{tmp_path}/s.db")
        proctor.init(url="http://127.0.0.1:" + str(server.config.port), instrument=False)

        @proctor.tool
        def step(i): return i

        with proctor.session(agent="same-process"):
            for i in range(300):
                step(i)
        assert proctor.flush(20)
        db = sqlite3.connect("{tmp_path}/s.db")
        print(db.execute("select count(*), count(distinct trace_id) from spans").fetchone())
        """
    )
    proc = run_agent(code, {"PROCTOR_SPOOL_DIR": str(tmp_path / "spool")}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(301, 1)"


INSTRUMENTED_AGENT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {conformance_dir!r})
    import proctor
    from proctor.sdk import status
    from fake_openai import running_fake_openai

    proctor.init(service_name="instrumented")
    print(status()["instrumented"])
    import openai

    with running_fake_openai() as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test")
        with proctor.session(agent="weather", session_id="sess-inst"):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{{"role": "user", "content": "Weather in Paris?"}}],
                tools=[{{"type": "function", "function": {{"name": "get_weather", "parameters": {{
                    "type": "object", "properties": {{"city": {{"type": "string"}}}}}}}}}}],
            )
    assert proctor.flush(20)
    """
)


def test_init_enables_an_installed_instrumentor_and_its_llm_spans_join_the_session(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'agent.db'}"
    code = INSTRUMENTED_AGENT.format(conformance_dir=str(Path(__file__).parent / "conformance"))
    proc = run_agent(code, {"PROCTOR_DATABASE_URL": db, "PROCTOR_URL": ""}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # one instrumentor per library: OpenInference is preferred over OpenLLMetry and openai-v2
    assert "openinference.instrumentation.openai.OpenAIInstrumentor" in proc.stdout
    assert "opentelemetry.instrumentation.openai.OpenAIInstrumentor" not in proc.stdout

    store = SpanStore(open_engine(db))
    [t] = trace_list(store, TraceFilter(session_id="sess-inst"))["traces"]
    spans = trace_detail(store, t["trace_id"])["spans"]
    assert [(s["kind"], s["depth"]) for s in spans] == [("agent", 0), ("llm", 1)]
    llm = spans[1]
    assert (llm["model"], llm["input_tokens"], llm["output_tokens"]) == ("gpt-4o-mini", 42, 17)
    assert llm["session_id"] == "sess-inst" and llm["agent_name"] == "weather"
    assert llm["tool_calls"][0]["id"] == "call_weather_1"


def test_the_sdk_can_be_shut_down_and_initialised_again_in_one_process(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import proctor, proctor.sdk, sqlite3

        @proctor.tool
        def step(i): return i

        for n in range(2):
            proctor.init(database_url="sqlite:///{tmp_path}/run%d.db" % n, instrument=False)
            with proctor.session(agent="agent-%d" % n):
                step(n)
            proctor.sdk.shutdown()
            rows = sqlite3.connect("{tmp_path}/run%d.db" % n).execute(
                "select name, parent_span_id is null from spans order by start_ns").fetchall()
            print(rows)
        """
    )
    proc = run_agent(code, {"PROCTOR_URL": ""}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "[('invoke_agent agent-0', 1), ('execute_tool step', 0)]"
    assert second == "[('invoke_agent agent-1', 1), ('execute_tool step', 0)]"


def test_when_the_exporter_cannot_keep_up_the_recorder_drops_the_oldest_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from proctor.sdk.recorder import SpanRecorder

    class SlowSink:
        def __init__(self) -> None:
            self.bodies: list[bytes] = []

        def export_encoded(self, body: bytes) -> None:
            self.bodies.append(body)

    sink = SlowSink()
    rec = SpanRecorder(sink, {"service.name": "t"}, max_queue=100, batch_size=10**9, delay_s=3600)
    for i in range(250):
        rec.record((1, i + 1, 0, "step", 1, 2, {"i": i}, None))
    with caplog.at_level(logging.WARNING, logger="proctor.sdk"):
        assert rec.flush(5)
    rec.shutdown(1)
    assert rec.dropped == 150
    assert "150 span(s) dropped" in caplog.text
    assert sink.bodies  # the newest 100 were exported


GOVERNED_AGENT = textwrap.dedent(
    """
    import proctor

    @proctor.tool
    def issue_refund(order_id: str, amount_usd: float) -> str:
        with open("refunds.log", "a") as f:
            f.write(order_id + "\\n")
        return "refunded"

    @proctor.tool
    def send_email(to: str, body: str) -> str:
        return "sent: " + body

    proctor.init(service_name="governed", instrument=False, policy="policy.yaml")
    with proctor.session(agent="refund-agent", session_id="sess-gov"):
        print(issue_refund("O-1", 20))
        try:
            issue_refund("O-2", 80)
        except proctor.ApprovalPending as err:
            print("held", err.approval.id)
        print(send_email("a@corp.example", "card 4111 1111 1111 1111"))
    """
)

GOVERNED_POLICY = """
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: refunds, version: "1"}
spec:
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools:
    - {name: issue_refund, side_effect: irreversible}
    - {name: send_email, side_effect: external}
  rules:
    - {id: small, tools: issue_refund, when: "args.amount_usd <= 50", effect: allow}
    - {id: large, tools: issue_refund, when: "args.amount_usd > 50", effect: require_approval}
    - {id: mail, tools: send_email, effect: allow}
    - {id: cards, kind: scanner, scanner: pii, tools: send_email, stages: [tool_call],
       entities: {CREDIT_CARD: redact}, effect: redact}
"""


def test_a_governed_tool_call_carries_its_decision_as_a_span_event_and_records_what_really_ran(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy.yaml").write_text(GOVERNED_POLICY)
    db = f"sqlite:///{tmp_path / 'agent.db'}"
    proc = run_agent(GOVERNED_AGENT, {"PROCTOR_DATABASE_URL": db, "PROCTOR_URL": ""}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "refunded" in proc.stdout and "held " in proc.stdout and "sent: card <CREDIT_CARD>" in proc.stdout
    assert (tmp_path / "refunds.log").read_text() == "O-1\n"  # the held refund never ran
    store = SpanStore(open_engine(db))
    [t] = trace_list(store, TraceFilter(agent="refund-agent"))["traces"]
    tools = [store.get_span(s["span_id"]) for s in trace_detail(store, t["trace_id"])["spans"][1:]]
    events = [[e for e in s["events"] if e["name"] == "proctor.decision"] for s in tools]  # type: ignore[index]
    assert [ev[0]["attributes"]["proctor.decision.rule_id"] for ev in events] == ["small", "large", "cards"]
    assert [ev[0]["attributes"]["proctor.decision.effect"] for ev in events] == ["allow", "require_approval", "redact"]
    held, email = tools[1], tools[2]
    assert held["status"] == "ok" and held["attributes"]["proctor.tool.held_for_approval"] is True  # type: ignore[index]
    assert "4111" not in email["tool_arguments"] and "<CREDIT_CARD>" in email["tool_arguments"]  # type: ignore[index]


RESOLVED_OVER_HTTP_AGENT = textwrap.dedent(
    """
    import proctor
    from opentelemetry import trace

    @proctor.tool(side_effect="irreversible")
    def billing_refund(amount_usd: float) -> str:
        return "refunded"

    provider = proctor.init(service_name="fleet", instrument=False)
    tracer = provider.get_tracer("agent-code")
    for agent in ("support", "kb"):
        with proctor.session(agent=agent, env="prod", session_id=f"sess-{agent}"):
            with tracer.start_as_current_span(f"plan {agent}"):  # an OpenTelemetry span of the agent's own
                pass
            try:
                print(agent, billing_refund(amount_usd=45))
            except proctor.ActionDenied as err:
                print(agent, "denied", err.decision.rule_id)
    print("flushed", proctor.flush())
    """
)

PINNED_BUNDLE = {
    "apiVersion": "proctor/v1", "kind": "PolicyBundle", "metadata": {"name": "pinned", "version": "3"},
    "spec": {"rules": [{"id": "no-refunds", "tools": "billing_refund", "effect": "deny",
                        "message": "refunds are off in this version"}]},
}


def test_with_a_server_url_a_session_resolves_its_version_over_http_and_each_version_gets_its_own_resource(
    tmp_path: Path,
) -> None:
    """A real SDK against a fake Proctor server: the registry answers /api/agents/NAME/live, the
    OTLP endpoint keeps what it is sent. The deployed version's label and hash become resource
    attributes, one resource per agent version, and its pinned bundle is enforced locally."""
    import gzip
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    bodies: list[bytes] = []
    asked: list[str] = []
    support = "ab" * 32

    class FakeProctor(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # the registry
            asked.append(self.path)
            if self.path.startswith("/api/agents/support/live?env=prod"):
                doc = {"agent": "support", "environment": "prod", "version_id": support, "short_id": support[:12],
                       "label": "2.0.0", "policy": {"hash": "c" * 64, "document": PINNED_BUNDLE}}
                body, status = json.dumps(doc).encode(), 200
            else:  # kb is not deployed anywhere
                body, status = b'{"detail": "no version of \'kb\' is deployed to \'prod\'"}', 404
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # OTLP
            data = self.rfile.read(int(self.headers["content-length"]))
            bodies.append(gzip.decompress(data) if self.headers.get("content-encoding") == "gzip" else data)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeProctor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = run_agent(RESOLVED_OVER_HTTP_AGENT, {"PROCTOR_URL": f"http://127.0.0.1:{server.server_port}",
                                                    "PROCTOR_DATABASE_URL": ""}, tmp_path)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    # support 2.0.0 pins a bundle that denies refunds; kb is not deployed: unresolved, ungoverned
    assert proc.stdout.splitlines() == ["support denied no-refunds", "kb refunded", "flushed True"]
    assert asked == ["/api/agents/support/live?env=prod", "/api/agents/kb/live?env=prod"]
    assert (tmp_path / ".proctor" / "proctor.db").exists()  # the pinned bundle's guard keeps its state locally

    resources: dict[tuple[str, ...], set[str]] = {}
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            attrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            key = (attrs["service.name"], attrs.get("gen_ai.agent.name", ""), attrs.get("gen_ai.agent.version", ""),
                   attrs.get("proctor.agent.version_hash", ""))
            resources.setdefault(key, set()).update(s.name for ss in rs.scope_spans for s in ss.spans)
    assert resources == {
        ("fleet", "support", "2.0.0", support): {"invoke_agent support", "plan support", "execute_tool billing_refund"},
        ("fleet", "kb", "", ""): {"invoke_agent kb", "plan kb", "execute_tool billing_refund"},
    }
