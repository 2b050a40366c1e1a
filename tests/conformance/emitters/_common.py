"""Shared plumbing for the conformance emitters.

Each emitter is run as ``python <dialect>.py --openai-base-url URL --otlp-endpoint URL [--stream]``
against the fake OpenAI server. This module owns the parts that must be identical across
dialects: CLI, OTel SDK setup (OTLP/protobuf over HTTP), the ``get_weather`` tool, the prompts
and, for the raw-OpenAI dialects, the two-completion tool-calling turn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = "You are a weather assistant. Use the get_weather tool."
USER_PROMPT = "What is the weather in Paris?"
EXPECTED_TEXT = "It is sunny in Paris."
SESSION_ID = "sess-conf-1"
USER_ID = "user-conf-1"
AGENT_NAME = "weather_agent"
TOOL_NAME = "get_weather"
TOOL_DESCRIPTION = "Get the current weather for a city."
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
    "additionalProperties": False,
}
CHAT_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": TOOL_PARAMETERS},
    }
]


@dataclass(frozen=True)
class EmitterArgs:
    openai_base_url: str
    otlp_endpoint: str
    stream: bool


def base_env() -> None:
    """Environment every emitter needs before any instrumentation is imported."""
    os.environ.setdefault("OPENAI_API_KEY", "sk-test")
    # A stray OTEL_SDK_DISABLED in the caller's environment would silently produce empty fixtures.
    os.environ.pop("OTEL_SDK_DISABLED", None)


def parse_args(dialect: str) -> EmitterArgs:
    parser = argparse.ArgumentParser(description=f"Emit one agent turn as the '{dialect}' dialect.")
    parser.add_argument("--openai-base-url", required=True, help="e.g. http://127.0.0.1:PORT/v1")
    parser.add_argument("--otlp-endpoint", required=True, help="full OTLP/HTTP URL ending in /v1/traces")
    parser.add_argument("--stream", action="store_true", help="use streamed completions")
    ns = parser.parse_args()
    return EmitterArgs(openai_base_url=ns.openai_base_url, otlp_endpoint=ns.otlp_endpoint, stream=ns.stream)


def make_tracer_provider(dialect: str, otlp_endpoint: str, *, set_global: bool = True) -> Any:
    """TracerProvider exporting OTLP protobuf over HTTP to ``otlp_endpoint``."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"conformance-{dialect}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, timeout=10)))
    if set_global:
        # Several instrumentations resolve the global provider lazily, so install it too.
        trace.set_tracer_provider(provider)
    return provider


def shutdown_provider(provider: Any) -> None:
    """Flush before exiting so no span is lost; a failed flush is a failed run."""
    flushed = provider.force_flush(timeout_millis=15_000)
    provider.shutdown()
    if not flushed:
        raise RuntimeError("force_flush timed out: spans may not have been exported")


def get_weather(city: str) -> str:
    """The local tool: the answer is fixed so every dialect records the same result."""
    del city
    return "sunny"


ExecuteTool = Callable[[str, str, str], str]
"""(tool_call_id, tool_name, arguments_json) -> tool result text."""


def run_local_tool(call_id: str, name: str, arguments: str) -> str:
    del call_id
    if name != TOOL_NAME:
        raise ValueError(f"unexpected tool {name!r}")
    return get_weather(**json.loads(arguments))


def _complete(client: Any, messages: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
    """One chat completion; returns the assistant message as a request-ready dict."""
    if not stream:
        response = client.chat.completions.create(model=MODEL, messages=messages, tools=CHAT_TOOLS)
        message: dict[str, Any] = response.choices[0].message.model_dump(exclude_none=True)
        message.pop("refusal", None)
        return message
    # Streamed: accumulate content and tool-call deltas by index, as an app would.
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                text.append(delta.content)
            for tc in delta.tool_calls or []:
                call = calls.setdefault(
                    tc.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if tc.id:
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["function"]["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    call["function"]["arguments"] += tc.function.arguments
    message = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def run_raw_openai_turn(client: Any, stream: bool, execute_tool: ExecuteTool) -> str:
    """The agent-like turn for raw-OpenAI dialects: completion -> tool call -> completion -> text."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT},
    ]
    first = _complete(client, messages, stream)
    tool_calls = first.get("tool_calls") or []
    if len(tool_calls) != 1:
        raise RuntimeError(f"expected exactly one tool call, got {first!r}")
    messages.append(first)
    for call in tool_calls:
        result = execute_tool(call["id"], call["function"]["name"], call["function"]["arguments"])
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    final = _complete(client, messages, stream)
    return str(final.get("content") or "")


def check_final_text(text: str) -> None:
    if text != EXPECTED_TEXT:
        raise RuntimeError(f"unexpected final answer {text!r}")


def run_main(body: Callable[[], None]) -> None:
    """Run ``body`` and turn any failure into a non-zero exit with a traceback on stderr."""
    try:
        body()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
