"""Emit one agent turn with openinference-instrumentation-openai (Arize/Phoenix dialect).

The instrumentation only wraps the OpenAI client (LLM spans). So that the turn is one trace
that looks like an OpenInference app, the emitter adds, with OpenInference's own helpers:

* a root AGENT span ``weather_agent`` (``OITracer`` with ``openinference_span_kind="agent"``);
* a TOOL span ``execute_tool get_weather`` around the local tool call (the instrumentation
  makes no tool spans), carrying ``tool.name``/``tool.id``/``tool.parameters`` and input/output.

Session and user ids come from ``using_attributes``, which OpenInference copies onto every
span started inside it (``session.id``, ``user.id``).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # found via the sys.path entry above when run as a script

DIALECT = "openinference_openai"


def main() -> None:
    args = c.parse_args(DIALECT)
    c.base_env()
    # Content capture is on by default in OpenInference; make it explicit so a user env can't hide it.
    os.environ["OPENINFERENCE_HIDE_INPUTS"] = "false"
    os.environ["OPENINFERENCE_HIDE_OUTPUTS"] = "false"

    from openai import OpenAI
    from openinference.instrumentation import OITracer, TraceConfig, using_attributes
    from openinference.instrumentation.openai import OpenAIInstrumentor

    provider = c.make_tracer_provider(DIALECT, args.otlp_endpoint)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    tracer = OITracer(provider.get_tracer("conformance.openinference"), TraceConfig())
    client = OpenAI(base_url=args.openai_base_url, max_retries=0)

    def execute_tool(call_id: str, name: str, arguments: str) -> str:
        with tracer.start_as_current_span(f"execute_tool {name}", openinference_span_kind="tool") as span:
            span.set_tool(name=name, description=c.TOOL_DESCRIPTION, parameters=c.TOOL_PARAMETERS)
            span.set_attribute("tool.id", call_id)
            span.set_input(arguments, mime_type="application/json")
            result = c.run_local_tool(call_id, name, arguments)
            span.set_output(result)
            return result

    try:
        with (
            using_attributes(session_id=c.SESSION_ID, user_id=c.USER_ID),
            tracer.start_as_current_span(c.AGENT_NAME, openinference_span_kind="agent") as root,
        ):
            root.set_attribute("agent.name", c.AGENT_NAME)
            root.set_input(json.dumps({"prompt": c.USER_PROMPT}), mime_type="application/json")
            text = c.run_raw_openai_turn(client, args.stream, execute_tool)
            root.set_output(text)
        c.check_final_text(text)
    finally:
        c.shutdown_provider(provider)


if __name__ == "__main__":
    c.run_main(main)
