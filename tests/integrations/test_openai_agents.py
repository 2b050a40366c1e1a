"""The guard in the OpenAI Agents SDK: a real ``Runner`` driven by the SDK's ``ScriptedModel``.

The scripted model asks for one tool call, then answers; what it was sent on its second call
is what the model "saw" — the tool's output, or the guard's refusal in its place.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, Tool, UserError, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage

import proctor
from proctor.guard import ActionDenied, Guard, SessionTerminated
from proctor.integrations import NoSessionError
from proctor.integrations.openai_agents import OpenAIAgentsGuard, guard_agent_tools
from proctor.sdk.governance import use_guard

from .support import AWS_KEY, CONFIG, DENIAL_TEXT, approval_id_in

SESSION = "oa-1"


class Tools:
    """Function tools that note every call that really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

        @function_tool
        def get_weather(city: str) -> str:
            """Weather for a city."""
            self.ran.append(("get_weather", {"city": city}))
            return f"Sunny in {city}"

        @function_tool
        def delete_db(name: str) -> str:
            """Drop a database."""
            self.ran.append(("delete_db", {"name": name}))
            return f"dropped {name}"

        @function_tool
        def refund(order: str, amount_usd: float) -> str:
            """Refund an order."""
            self.ran.append(("refund", {"order": order, "amount_usd": amount_usd}))
            return f"refunded {amount_usd} on {order}"

        @function_tool
        def exfiltrate(data: str) -> str:
            """Send data somewhere."""
            self.ran.append(("exfiltrate", {"data": data}))
            return "sent"

        @function_tool
        def read_config(name: str) -> str:
            """A config file, credentials and all."""
            self.ran.append(("read_config", {"name": name}))
            return CONFIG

        @function_tool
        def post_note(text: str) -> str:
            """Post a note."""
            self.ran.append(("post_note", {"text": text}))
            return "posted"

        self.all: list[Tool] = [get_weather, delete_db, refund, exfiltrate, read_config, post_note]


def call_then_answer(tool: str, args: dict[str, Any], call_id: str = "call-1") -> ScriptedModel:
    return ScriptedModel([[function_call(tool, args, call_id=call_id)], [assistant_message("done")]])


def tool_output_seen(model: ScriptedModel) -> str:
    """The function_call_output the model was sent on its last call."""
    last = model.last_call
    assert last is not None
    outputs = [i["output"] for i in last.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert outputs, last.input
    return str(outputs[-1])


def run(agent: Agent[Any], text: Any = "go", **kwargs: Any) -> Any:
    """One run, offline (no trace export), to its end or its first interruption."""
    return asyncio.run(Runner.run(agent, text, run_config=RunConfig(tracing_disabled=True), **kwargs))


def test_an_allowed_tool_runs_and_the_model_sees_its_result(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), call_then_answer("get_weather", {"city": "Paris"})
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard, SESSION)

    result = run(agent)

    assert tools.ran == [("get_weather", {"city": "Paris"})]
    assert tool_output_seen(model) == "Sunny in Paris"
    assert result.final_output == "done"
    [row] = decisions("get_weather")
    assert (row["effect"], row["session_id"], row["agent"]) == ("allow", SESSION, "support")


def test_a_denied_tool_does_not_run_and_the_model_reads_the_refusal(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), call_then_answer("delete_db", {"name": "prod"})
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard, SESSION)

    result = run(agent)

    assert tools.ran == []
    assert tool_output_seen(model).startswith(DENIAL_TEXT)
    assert result.final_output == "done"  # the run went on: the model adapted
    [gr] = result.tool_input_guardrail_results
    assert gr.output.behavior["type"] == "reject_content"
    assert gr.output.output_info["effect"] == "deny"
    assert [r["effect"] for r in decisions("delete_db")] == ["deny"]


def test_require_approval_names_the_pending_approval_and_the_call_runs_once_approved(
        guard: Guard, decisions: Any) -> None:
    tools = Tools()
    args = {"order": "o-7", "amount_usd": 80}
    model = call_then_answer("refund", args)
    model.extend([[function_call("refund", args, call_id="call-2")], [assistant_message("refunded")]])
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard, SESSION)

    run(agent)
    approval_id = approval_id_in(tool_output_seen(model))
    assert tools.ran == []
    assert guard.approvals.get(approval_id).status == "pending"

    guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
    result = run(agent, "try again")

    assert tools.ran == [("refund", args)]
    assert tool_output_seen(model) == "refunded 80.0 on o-7"
    assert result.final_output == "refunded"
    assert guard.approvals.get(approval_id).status == "consumed"
    assert [(r["effect"], r["rule_id"]) for r in decisions("refund")] == [
        ("require_approval", "refunds-large"), ("allow", f"approval:{approval_id}")]


def test_interrupt_mode_pauses_the_run_until_a_human_decides_in_proctor(guard: Guard, decisions: Any) -> None:
    tools = Tools()
    args = {"order": "o-8", "amount_usd": 120}
    model = call_then_answer("refund", args)
    tools_guard = OpenAIAgentsGuard(guard, session=SESSION, agent_name="support", approvals="interrupt")
    agent = tools_guard.guard_agent(Agent(name="support", model=model, tools=tools.all))

    result = run(agent)
    [item] = result.interruptions
    approval_id = tools_guard.approval_id(item)
    assert approval_id is not None and guard.approvals.get(approval_id).status == "pending"
    assert tools.ran == []

    state = result.to_state()
    [waiting] = asyncio.run(tools_guard.apply_decisions(state))  # nobody decided yet
    assert tools_guard.approval_id(waiting) == approval_id
    guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
    assert asyncio.run(tools_guard.apply_decisions(state)) == []
    result = run(agent, state)

    assert tools.ran == [("refund", args)]
    assert tool_output_seen(model) == "refunded 120.0 on o-8"
    assert result.final_output == "done"
    assert [r["effect"] for r in decisions("refund")] == ["require_approval", "allow"]


def test_interrupt_mode_a_denial_in_proctor_rejects_the_call_with_the_reason(guard: Guard) -> None:
    tools = Tools()
    model = call_then_answer("refund", {"order": "o-9", "amount_usd": 500})
    tools_guard = OpenAIAgentsGuard(guard, session=SESSION, approvals="interrupt")
    agent = tools_guard.guard_agent(Agent(name="support", model=model, tools=tools.all))

    result = run(agent)
    [item] = result.interruptions
    approval_id = tools_guard.approval_id(item)
    assert approval_id is not None
    guard.approvals.decide(approval_id, approved=False, by="bob", reason="too much")
    state = result.to_state()
    asyncio.run(tools_guard.apply_decisions(state))
    run(agent, state)

    assert tools.ran == []
    assert tool_output_seen(model) == f"Refused by policy: approval {approval_id} denied by bob: too much"


def test_interrupt_mode_allowed_and_denied_calls_do_not_interrupt(guard: Guard) -> None:
    tools = Tools()
    model = ScriptedModel([
        [function_call("get_weather", {"city": "Oslo"}, call_id="a"),
         function_call("delete_db", {"name": "prod"}, call_id="b")],
        [assistant_message("done")],
    ])
    tools_guard = OpenAIAgentsGuard(guard, session=SESSION, approvals="interrupt")
    agent = tools_guard.guard_agent(Agent(name="support", model=model, tools=tools.all))

    result = run(agent)

    assert result.interruptions == []
    assert tools.ran == [("get_weather", {"city": "Oslo"})]
    last = model.last_call
    assert last is not None
    outputs = {i["call_id"]: i["output"] for i in last.input
               if isinstance(i, dict) and i.get("type") == "function_call_output"}
    assert outputs["a"] == "Sunny in Oslo"
    assert outputs["b"].startswith(DENIAL_TEXT)


def test_a_terminated_session_stops_the_run(guard: Guard) -> None:
    tools = Tools()
    model = ScriptedModel([[function_call("exfiltrate", {"data": "secrets"}, call_id="x")],
                           [assistant_message("never")]])
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard, SESSION)

    with pytest.raises(SessionTerminated, match="Exfiltration attempt"):
        run(agent)
    assert tools.ran == []
    assert model.remaining_steps == 1  # the model was not asked again

    # and the session stays ended: even an allowed read is refused now
    with pytest.raises(SessionTerminated):
        run(guard_agent_tools(Agent(name="support", model=call_then_answer("get_weather", {"city": "Rome"}),
                                    tools=tools.all), guard, SESSION))
    assert tools.ran == []


def test_the_session_can_come_from_the_run_context(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), call_then_answer("get_weather", {"city": "Lima"})
    tools_guard = OpenAIAgentsGuard(guard, session=lambda ctx: ctx.context["session_id"])
    agent = tools_guard.guard_agent(Agent(name="support", model=model, tools=tools.all))

    run(agent, context={"session_id": "from-context"})

    assert [r["session_id"] for r in decisions("get_weather")] == ["from-context"]


def test_run_hooks_check_each_model_call_before_it_is_made(guard: Guard, decisions: Any) -> None:
    tools = Tools()
    model = ScriptedModel([[assistant_message("hello")]], default_usage=Usage(input_tokens=12, output_tokens=5))
    tools_guard = OpenAIAgentsGuard(guard, session=SESSION)
    agent = tools_guard.guard_agent(Agent(name="support", model=model, tools=tools.all))

    assert run(agent, hooks=tools_guard.run_hooks()).final_output == "hello"
    assert guard.session(SESSION).tokens == 17  # settled with the real usage

    greedy = agent.clone(model_settings=ModelSettings(max_tokens=4000))
    with pytest.raises(ActionDenied, match="capped at 1000 tokens"):
        run(greedy, hooks=tools_guard.run_hooks())
    assert model.remaining_steps == 0 and len(model.calls) == 1  # the refused call was never made
    assert [r["effect"] for r in decisions() if r["action"] == "llm_call"] == ["allow", "deny"]


def test_secrets_in_a_tool_result_are_redacted_before_the_model_sees_them(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), call_then_answer("read_config", {"name": "prod"})
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard, SESSION)

    run(agent)

    assert tools.ran == [("read_config", {"name": "prod"})]
    seen = tool_output_seen(model)
    assert AWS_KEY not in seen and "region = eu-west-1" in seen
    assert [r["effect"] for r in decisions("read_config")] == ["allow", "redact"]


def test_redacted_arguments_are_what_the_tool_receives(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), call_then_answer("post_note", {"text": f"my key is {AWS_KEY}"})
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard, SESSION)

    run(agent)

    [(name, args)] = tools.ran
    assert name == "post_note" and AWS_KEY not in args["text"] and args["text"].startswith("my key is ")
    assert [r["effect"] for r in decisions("post_note")] == ["redact"]


def test_inside_a_proctor_session_the_process_guard_governs(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), call_then_answer("delete_db", {"name": "prod"})
    agent = guard_agent_tools(Agent(name="sdk-agent", model=model, tools=tools.all))  # no guard, no session
    previous = use_guard(guard)
    try:
        with proctor.session(agent="support-triage", session_id="sdk-1", env="prod"):
            run(agent)
    finally:
        use_guard(previous)

    assert tools.ran == []
    assert tool_output_seen(model).startswith(DENIAL_TEXT)
    [row] = decisions("delete_db")
    assert (row["session_id"], row["agent"]) == ("sdk-1", "support-triage")


def test_without_a_session_the_adapter_refuses_to_run_a_tool_ungoverned(guard: Guard) -> None:
    tools, model = Tools(), call_then_answer("get_weather", {"city": "Bern"})
    agent = guard_agent_tools(Agent(name="support", model=model, tools=tools.all), guard)  # no session

    with pytest.raises(UserError) as raised:
        run(agent)
    assert isinstance(raised.value.__cause__, NoSessionError)
    assert tools.ran == []
