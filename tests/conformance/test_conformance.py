"""Conformance: the real instrumentation packages, talking to a fake OpenAI server on loopback,
export over OTLP to a running Proctor; we assert the canonical fields of what was stored.

One agent turn per run: the model asks for get_weather(city=Paris) with id call_weather_1, the
tool answers, the model replies. Usage per completion: 42 in, 17 out (8 cached, 3 reasoning).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.server.run import start_in_thread
from proctor.store import SpanStore, TraceFilter, open_engine
from proctor.traces import trace_detail, trace_list

from conftest import free_port
from fake_openai import running_fake_openai

pytestmark = pytest.mark.conformance

EMITTERS = Path(__file__).parent / "emitters"
# dialect -> (expected dialect label on the LLM spans, cache/reasoning tokens reported?)
DIALECTS = {
    "openinference_openai": ("openinference", True),
    "openllmetry_openai": ("openllmetry", True),
    "otel_genai_openai_v2": ("otel-genai", False),
    "openai_agents_openinference": ("openinference", False),
    "pydantic_ai": ("pydantic-ai", True),
}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    with running_fake_openai() as base_url:
        yield base_url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def proctor_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A running Proctor server (URL, database URL) on each engine."""
    if request.param == "sqlite":
        db = f"sqlite:///{tmp_path_factory.mktemp('conf') / 'proctor.db'}"
        cleanup = None
    else:
        import uuid

        from sqlalchemy import create_engine, text

        from conftest import PG_URL, _pg_schema_url

        schema = f"conf_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = _pg_schema_url(schema)

        def cleanup() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    port = free_port()
    server, thread = start_in_thread(port=port, database_url=db)
    try:
        yield f"http://127.0.0.1:{port}", db
    finally:
        server.should_exit = True
        thread.join(10)
        if cleanup:
            cleanup()


def emit(dialect: str, stream: bool, fake_openai: str, proctor_url: str) -> None:
    cmd = [sys.executable, str(EMITTERS / f"{dialect}.py"), "--openai-base-url", fake_openai,
           "--otlp-endpoint", f"{proctor_url}/v1/traces"]
    if stream:
        cmd.append("--stream")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{dialect} emitter failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_dialect_is_stored_with_canonical_fields(
    dialect: str, stream: bool, fake_openai: str, proctor_server: tuple[str, str]
) -> None:
    url, db = proctor_server
    started = time.time_ns()
    emit(dialect, stream, fake_openai, url)  # the exporter flushes before exit: stored on return

    store = SpanStore(open_engine(db))
    try:
        traces = trace_list(store, TraceFilter(service=f"conformance-{dialect}", since_ns=started))["traces"]
        assert len(traces) == 1, traces
        doc = trace_detail(store, traces[0]["trace_id"])
        spans = doc["spans"]
        label, has_details = DIALECTS[dialect]

        llm = [s for s in spans if s["kind"] == "llm"]
        assert len(llm) == 2
        for s in llm:
            full = store.get_span(s["span_id"])
            assert full is not None
            assert (full["model"], full["provider"]) == ("gpt-4o-mini", "openai")
            assert (full["input_tokens"], full["output_tokens"]) == (42, 17)
            assert full["cost_usd"] > 0
            assert full["dialect"] == label
            if has_details and not (dialect == "openllmetry_openai" and stream):
                assert (full["cache_read_tokens"], full["reasoning_tokens"]) == (8, 3)

        [tool] = [s for s in spans if s["kind"] == "tool"]
        assert tool["tool_name"] == "get_weather"
        tool_full = store.get_span(tool["span_id"])
        assert tool_full is not None and "Paris" in (tool_full["tool_arguments"] or "")

        links = [ln for ln in doc["links"] if ln["type"] == "tool_call"]
        assert [(ln["to"], ln["tool_call_id"]) for ln in links] == [(tool["span_id"], "call_weather_1")]
        asked = next(s for s in llm if s["span_id"] == links[0]["from"])
        assert asked["tool_calls"][0]["name"] == "get_weather"

        assert "weather_agent" in {s["agent_name"] for s in spans if s["kind"] == "agent"}
        assert doc["trace"]["session_id"] == "sess-conf-1"
        assert doc["trace"]["llm_count"] == 2 and doc["trace"]["input_tokens"] == 84
    finally:
        store.engine.dispose()
