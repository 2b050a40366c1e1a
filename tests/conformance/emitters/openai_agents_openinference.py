"""Emit one agent turn with the OpenAI Agents SDK traced by openinference-instrumentation-openai-agents.

The Agents SDK has its own tracing (traces/spans with ``SpanData`` payloads); OpenInference
registers a ``TracingProcessor`` that turns them into OTel spans. ``exclusive_processor=True``
replaces the SDK's default processor, which would otherwise upload traces to OpenAI's backend.

The SDK talks to the Responses API by default; the fake server only speaks Chat Completions,
so the agent uses ``OpenAIChatCompletionsModel`` (and the default API is set to match).
The framework executes the real ``get_weather`` function tool itself.

Session/user: the SDK's own ``group_id`` and ``trace_metadata`` are set on the RunConfig, and
OpenInference's ``using_attributes`` wraps the run. Only the latter reaches the OTel spans
(``session.id``/``user.id``): the OpenInference processor ignores ``group_id`` and metadata.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # found via the sys.path entry above when run as a script

DIALECT = "openai_agents_openinference"


async def _run(base_url: str, stream: bool) -> str:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        RunConfig,
        Runner,
        function_tool,
        set_default_openai_api,
        set_default_openai_client,
    )
    from openai import AsyncOpenAI
    from openinference.instrumentation import using_attributes

    client = AsyncOpenAI(base_url=base_url, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("chat_completions")

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city.

        Args:
            city: City name.
        """
        return c.get_weather(city)

    agent = Agent(
        name=c.AGENT_NAME,
        instructions=c.SYSTEM_PROMPT,
        model=OpenAIChatCompletionsModel(model=c.MODEL, openai_client=client),
        tools=[get_weather],
        # The SDK only asks for streamed usage by default when the client points at api.openai.com;
        # force it so the streamed fixture carries token counts as a real OpenAI deployment would.
        model_settings=ModelSettings(include_usage=True),
    )
    run_config = RunConfig(
        workflow_name="weather_workflow",
        group_id=c.SESSION_ID,
        trace_metadata={"user_id": c.USER_ID},
        trace_include_sensitive_data=True,
    )
    with using_attributes(session_id=c.SESSION_ID, user_id=c.USER_ID):
        if stream:
            streamed = Runner.run_streamed(agent, c.USER_PROMPT, run_config=run_config)
            async for _event in streamed.stream_events():
                pass
            return str(streamed.final_output)
        result = await Runner.run(agent, c.USER_PROMPT, run_config=run_config)
        return str(result.final_output)


def main() -> None:
    args = c.parse_args(DIALECT)
    c.base_env()
    # Sensitive data (inputs/outputs) is what the fixtures are for.
    os.environ["OPENAI_AGENTS_TRACE_INCLUDE_SENSITIVE_DATA"] = "true"
    os.environ.pop("OPENAI_AGENTS_DISABLE_TRACING", None)

    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    provider = c.make_tracer_provider(DIALECT, args.otlp_endpoint)
    OpenAIAgentsInstrumentor().instrument(tracer_provider=provider, exclusive_processor=True)
    try:
        text = asyncio.run(_run(args.openai_base_url, args.stream))
        c.check_final_text(text)
    finally:
        c.shutdown_provider(provider)


if __name__ == "__main__":
    c.run_main(main)
