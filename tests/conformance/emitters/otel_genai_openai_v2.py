"""Emit one agent turn with opentelemetry-instrumentation-openai-v2 (official OTel GenAI).

Default mode (used for the fixtures): ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``
with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY``, which puts
``gen_ai.input.messages`` / ``gen_ai.output.messages`` on the ``chat`` spans.

``--events``: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=EVENT_ONLY``. Content then
leaves the spans and goes to OTel *log records* (``gen_ai.client.inference.operation.details``
events), so this mode also installs a LoggerProvider exporting OTLP logs to the sibling
``/v1/logs`` endpoint. (The pre-1.30 ``=true`` mode with ``gen_ai.user.message`` /
``gen_ai.choice`` log events is unreachable with util-genai 1.1b0: its ``is_experimental_mode``
always returns True, so openai-v2 always takes the new path.)

The instrumentation only wraps the OpenAI client. The agent and tool spans come from
``opentelemetry-util-genai``'s ``TelemetryHandler`` (the official helper GenAI instrumentations
build on): ``invoke_agent weather_agent`` as root, carrying ``gen_ai.conversation.id``, and
``execute_tool get_weather`` around the local tool call. Written against util-genai 1.1b0, the
newest release openai-v2 2.4b0 can import (1.2b0 dropped ``opentelemetry.util.genai.instruments``).
In 1.1b0 the conversation id is only on the agent span; newer util-genai also propagates it
to child ``chat`` spans through the context.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # found via the sys.path entry above when run as a script

DIALECT = "otel_genai_openai_v2"


def _events_flag() -> bool:
    # The shared CLI doesn't know this flag; peel it off before _common parses argv.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--events", action="store_true")
    ns, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    return bool(ns.events)


def main() -> None:
    events = _events_flag()
    args = c.parse_args(DIALECT)
    c.base_env()
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "EVENT_ONLY" if events else "SPAN_ONLY"

    from openai import OpenAI
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.util.genai.handler import TelemetryHandler
    from opentelemetry.util.genai.types import InputMessage, OutputMessage, Text

    provider = c.make_tracer_provider(DIALECT, args.otlp_endpoint)
    logger_provider = None
    if events:
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        logs_endpoint = args.otlp_endpoint.rsplit("/v1/traces", 1)[0] + "/v1/logs"
        logger_provider = LoggerProvider(resource=provider.resource)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=logs_endpoint))
        )
        set_logger_provider(logger_provider)

    OpenAIInstrumentor().instrument(tracer_provider=provider, logger_provider=logger_provider)
    handler = TelemetryHandler(tracer_provider=provider, logger_provider=logger_provider)
    client = OpenAI(base_url=args.openai_base_url, max_retries=0)

    def execute_tool(call_id: str, name: str, arguments: str) -> str:
        with handler.tool(
            name, tool_call_id=call_id, tool_type="function", tool_description=c.TOOL_DESCRIPTION
        ) as invocation:
            invocation.arguments = json.loads(arguments)
            result = c.run_local_tool(call_id, name, arguments)
            invocation.tool_result = result
            return result

    try:
        with handler.invoke_local_agent(agent_name=c.AGENT_NAME, request_model=c.MODEL) as agent:
            agent.conversation_id = c.SESSION_ID
            agent.input_messages = [InputMessage(role="user", parts=[Text(content=c.USER_PROMPT)])]
            text = c.run_raw_openai_turn(client, args.stream, execute_tool)
            agent.output_messages = [
                OutputMessage(role="assistant", parts=[Text(content=text)], finish_reason="stop")
            ]
        c.check_final_text(text)
    finally:
        c.shutdown_provider(provider)
        if logger_provider is not None:
            logger_provider.force_flush(timeout_millis=15_000)
            logger_provider.shutdown()


if __name__ == "__main__":
    c.run_main(main)
