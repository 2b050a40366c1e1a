"""Emit one agent turn with pydantic-ai's built-in OpenTelemetry instrumentation.

pydantic-ai instruments itself (no separate package): ``Agent.instrument_all(InstrumentationSettings(
tracer_provider=...))`` (2.68 has no ``Agent(instrument=...)`` argument any more) emits an ``invoke_agent``/agent-run span, one ``chat`` span per model
request and one ``execute_tool`` span per tool call, following the OTel GenAI conventions with
pydantic-ai extras (``logfire.*``, ``pydantic_ai.*``). Defaults are kept (``include_content=True``,
data-format version 5), as a user would get them.

The model is ``OpenAIChatModel`` pointed at the fake server; the framework runs the real
``get_weather`` tool itself. The session id goes in ``conversation_id``, which pydantic-ai
records as ``gen_ai.conversation.id``. pydantic-ai has no user-id concept.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # found via the sys.path entry above when run as a script

# This script is itself named pydantic_ai.py: drop its directory from sys.path so that
# `import pydantic_ai` below finds the installed package, not this file.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

DIALECT = "pydantic_ai"


async def _run(base_url: str, stream: bool, provider: object) -> str:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    # This version has no `instrument=` constructor argument; instrument_all is the global switch.
    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))  # type: ignore[arg-type]
    model = OpenAIChatModel(c.MODEL, provider=OpenAIProvider(base_url=base_url, api_key="sk-test"))
    agent = Agent(model, name=c.AGENT_NAME, instructions=c.SYSTEM_PROMPT)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Get the current weather for a city.

        Args:
            city: City name.
        """
        return c.get_weather(city)

    if stream:
        # The model's tool call is not a final str output, so run_stream executes the tool and
        # streams the second response's text.
        async with agent.run_stream(c.USER_PROMPT, conversation_id=c.SESSION_ID) as response:
            return await response.get_output()
    result = await agent.run(c.USER_PROMPT, conversation_id=c.SESSION_ID)
    return result.output


def main() -> None:
    args = c.parse_args(DIALECT)
    c.base_env()
    provider = c.make_tracer_provider(DIALECT, args.otlp_endpoint)
    try:
        text = asyncio.run(_run(args.openai_base_url, args.stream, provider))
        c.check_final_text(text)
    finally:
        c.shutdown_provider(provider)


if __name__ == "__main__":
    c.run_main(main)
