"""Emit one agent turn with opentelemetry-instrumentation-openai (Traceloop's OpenLLMetry).

The instrumentation only wraps the OpenAI client (``openai.chat`` spans). What an OpenLLMetry
app usually adds around it comes from ``traceloop-sdk`` (decorators and association
properties), which is not installed here, so this emitter builds those spans by hand with the
attribute names from ``opentelemetry-semconv-ai`` (``SpanAttributes.TRACELOOP_*``):

* a root ``weather_agent.agent`` span (what ``@agent(name="weather_agent")`` produces);
* a tool span around the local call, named ``execute_tool get_weather`` per the conformance
  brief (``@tool`` would name it ``get_weather.tool``), with ``traceloop.span.kind=tool``;
* a span processor that stamps ``traceloop.workflow.name`` and
  ``traceloop.association.properties.{session_id,user_id}`` on every span at start, as
  ``Traceloop.set_association_properties`` does. These are therefore emulated, not captured.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # found via the sys.path entry above when run as a script

DIALECT = "openllmetry_openai"


def main() -> None:
    args = c.parse_args(DIALECT)
    c.base_env()
    os.environ["TRACELOOP_TRACE_CONTENT"] = "true"

    from openai import OpenAI
    from opentelemetry import context as context_api
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import Span, SpanProcessor
    from opentelemetry.semconv_ai import SpanAttributes, TraceloopSpanKindValues

    association = {"session_id": c.SESSION_ID, "user_id": c.USER_ID}

    class AssociationProcessor(SpanProcessor):
        """Mirrors traceloop-sdk's span processor: context-wide properties on every span."""

        def on_start(self, span: Span, parent_context: context_api.Context | None = None) -> None:
            span.set_attribute(SpanAttributes.TRACELOOP_WORKFLOW_NAME, c.AGENT_NAME)
            for key, value in association.items():
                span.set_attribute(f"{SpanAttributes.TRACELOOP_ASSOCIATION_PROPERTIES}.{key}", value)

    provider = c.make_tracer_provider(DIALECT, args.otlp_endpoint)
    # Registered after the exporter's processor, but on_start runs before any span is exported.
    provider.add_span_processor(AssociationProcessor())
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    tracer = provider.get_tracer("conformance.openllmetry")
    client = OpenAI(base_url=args.openai_base_url, max_retries=0)

    def entity_io(payload: Any) -> str:
        return json.dumps(payload)

    def execute_tool(call_id: str, name: str, arguments: str) -> str:
        with tracer.start_as_current_span(f"execute_tool {name}") as span:
            span.set_attribute(SpanAttributes.TRACELOOP_SPAN_KIND, TraceloopSpanKindValues.TOOL.value)
            span.set_attribute(SpanAttributes.TRACELOOP_ENTITY_NAME, name)
            span.set_attribute(SpanAttributes.TRACELOOP_ENTITY_PATH, c.AGENT_NAME)
            span.set_attribute(
                SpanAttributes.TRACELOOP_ENTITY_INPUT,
                entity_io({"args": [], "kwargs": json.loads(arguments)}),
            )
            result = c.run_local_tool(call_id, name, arguments)
            span.set_attribute(SpanAttributes.TRACELOOP_ENTITY_OUTPUT, entity_io(result))
            return result

    try:
        with tracer.start_as_current_span(f"{c.AGENT_NAME}.agent") as root:
            root.set_attribute(SpanAttributes.TRACELOOP_SPAN_KIND, TraceloopSpanKindValues.AGENT.value)
            root.set_attribute(SpanAttributes.TRACELOOP_ENTITY_NAME, c.AGENT_NAME)
            root.set_attribute(
                SpanAttributes.TRACELOOP_ENTITY_INPUT, entity_io({"args": [c.USER_PROMPT], "kwargs": {}})
            )
            text = c.run_raw_openai_turn(client, args.stream, execute_tool)
            root.set_attribute(SpanAttributes.TRACELOOP_ENTITY_OUTPUT, entity_io(text))
        c.check_final_text(text)
    finally:
        c.shutdown_provider(provider)


if __name__ == "__main__":
    c.run_main(main)
