"""Building OTLP requests by hand for tests: the wire format, no SDK in between."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from proctor.semconv import encode_attributes, encode_value

any_value = encode_value
kvs = encode_attributes


def new_trace_id() -> bytes:
    return os.urandom(16)  # random, as real tracers make them (prefixes differ)


def new_span_id() -> bytes:
    return os.urandom(8)


def span(
    name: str,
    trace_id: bytes,
    span_id: bytes | None = None,
    parent: bytes | None = None,
    *,
    start_ns: int | None = None,
    duration_ms: float = 10.0,
    attrs: dict[str, Any] | None = None,
    error: str | None = None,
    events: list[tuple[str, dict[str, Any]]] | None = None,
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns()
    s = Span(
        trace_id=trace_id,
        span_id=span_id or new_span_id(),
        parent_span_id=parent or b"",
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1e6),
        attributes=kvs(attrs or {}),
    )
    if error is not None:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    for ev_name, ev_attrs in events or ():
        e = s.events.add()
        e.name = ev_name
        e.time_unix_nano = start
        e.attributes.extend(kvs(ev_attrs))
    return s


def request(spans: list[Span], service: str = "test-agent", resource: dict[str, Any] | None = None) -> bytes:
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=kvs({"service.name": service, **(resource or {})})),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="tests"), spans=spans)],
            )
        ]
    )
    return req.SerializeToString()


def agent_trace(
    *, agent: str = "support", session: str = "sess-1", model: str = "gpt-4o-mini", tool: str = "lookup_customer",
    fail_tool: bool = False, start_ns: int | None = None, input_tokens: int = 100, output_tokens: int = 20,
) -> tuple[bytes, list[Span]]:
    """A small realistic agent trace: agent -> llm (asks for a tool) -> tool -> llm."""
    tid = new_trace_id()
    t0 = start_ns if start_ns is not None else time.time_ns()
    root = new_span_id()
    common = {"gen_ai.conversation.id": session, "gen_ai.agent.name": agent}
    spans = [
        span(f"invoke_agent {agent}", tid, root, start_ns=t0, duration_ms=100,
             attrs={"gen_ai.operation.name": "invoke_agent", **common}),
        span(f"chat {model}", tid, parent=root, start_ns=t0 + 1_000_000, duration_ms=30, attrs={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "tool_call", "id": f"call_{tid.hex()[:8]}", "name": tool, "arguments": {"email": "a@b.c"}}
            ]}]),
            **common,
        }),
        span(f"execute_tool {tool}", tid, parent=root, start_ns=t0 + 40_000_000, duration_ms=20, attrs={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": f"call_{tid.hex()[:8]}", "gen_ai.tool.call.arguments": '{"email":"a@b.c"}',
            **common,
        }, error="upstream timeout" if fail_tool else None),
        span(f"chat {model}", tid, parent=root, start_ns=t0 + 70_000_000, duration_ms=25, attrs={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": input_tokens * 2, "gen_ai.usage.output_tokens": output_tokens,
            **common,
        }),
    ]
    return tid, spans
