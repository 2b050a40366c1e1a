"""The guard in pydantic-ai: a real ``Agent`` driven by a ``FunctionModel`` script.

The scripted model asks for one tool call, then answers; the ``ToolReturnPart`` it is sent
next is what it "saw": the tool's result (``outcome='success'``) or the guard's refusal
(``outcome='failed'``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import RequestUsage

from proctor.guard import ActionDenied, Guard, SessionTerminated
from proctor.integrations import NoSessionError
from proctor.integrations.pydantic_ai import ProctorCapability, guard_toolset

from .support import AWS_KEY, CONFIG, DENIAL_TEXT, approval_id_in

SESSION = "pa-1"


class Script:
    """A FunctionModel that plays ``steps`` (tool calls or text) and records what it was sent."""

    def __init__(self, *steps: tuple[str, dict[str, Any]] | str) -> None:
        self.steps = list(steps)
        self.seen: list[list[ModelMessage]] = []
        self.model = FunctionModel(self.respond, model_name="scripted")

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        step = self.steps.pop(0)
        usage = RequestUsage(input_tokens=20, output_tokens=4)
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)], usage=usage)
        name, args = step
        return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id=f"call-{len(self.seen)}")], usage=usage)

    def last_tool_return(self) -> ToolReturnPart:
        parts = [p for m in self.seen[-1] if isinstance(m, ModelRequest) for p in m.parts
                 if isinstance(p, ToolReturnPart)]
        assert parts, self.seen[-1]
        return parts[-1]


class Tools:
    """Plain functions that note every call that really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def get_weather(self, city: str) -> str:
        """Weather for a city."""
        self.ran.append(("get_weather", {"city": city}))
        return f"Sunny in {city}"

    def delete_db(self, name: str) -> str:
        """Drop a database."""
        self.ran.append(("delete_db", {"name": name}))
        return f"dropped {name}"

    def refund(self, order: str, amount_usd: float) -> str:
        """Refund an order."""
        self.ran.append(("refund", {"order": order, "amount_usd": amount_usd}))
        return f"refunded {amount_usd} on {order}"

    def exfiltrate(self, data: str) -> str:
        """Send data somewhere."""
        self.ran.append(("exfiltrate", {"data": data}))
        return "sent"

    def read_config(self, name: str) -> str:
        """A config file, credentials and all."""
        self.ran.append(("read_config", {"name": name}))
        return CONFIG

    def toolset(self) -> FunctionToolset[Any]:
        return FunctionToolset([self.get_weather, self.delete_db, self.refund, self.exfiltrate, self.read_config])


def agent_for(script: Script, tools: Tools, guard: Guard, **kwargs: Any) -> Agent[None, Any]:
    return Agent(script.model, toolsets=[guard_toolset(tools.toolset(), guard, session=SESSION, agent="support",
                                                       **kwargs)])


def test_an_allowed_tool_runs_and_the_model_sees_its_result(guard: Guard, decisions: Any) -> None:
    tools, script = Tools(), Script(("get_weather", {"city": "Paris"}), "done")

    result = agent_for(script, tools, guard).run_sync("go")

    assert tools.ran == [("get_weather", {"city": "Paris"})]
    seen = script.last_tool_return()
    assert (seen.content, seen.outcome) == ("Sunny in Paris", "success")
    assert result.output == "done"
    [row] = decisions("get_weather")
    assert (row["effect"], row["session_id"], row["agent"]) == ("allow", SESSION, "support")


def test_a_denied_tool_does_not_run_and_the_model_reads_the_refusal(guard: Guard, decisions: Any) -> None:
    tools, script = Tools(), Script(("delete_db", {"name": "prod"}), "I may not")

    result = agent_for(script, tools, guard).run_sync("go")

    assert tools.ran == []
    seen = script.last_tool_return()
    assert seen.outcome == "failed"
    assert str(seen.content).startswith(DENIAL_TEXT)
    assert result.output == "I may not"  # the run went on: the model adapted
    assert [r["effect"] for r in decisions("delete_db")] == ["deny"]


def test_require_approval_names_the_pending_approval_and_the_call_runs_once_approved(
        guard: Guard, decisions: Any) -> None:
    tools = Tools()
    args = {"order": "o-7", "amount_usd": 80}
    script = Script(("refund", args), "waiting", ("refund", args), "refunded")
    agent = agent_for(script, tools, guard)

    agent.run_sync("go")
    approval_id = approval_id_in(str(script.last_tool_return().content))
    assert script.last_tool_return().outcome == "failed"
    assert tools.ran == []
    assert guard.approvals.get(approval_id).status == "pending"

    guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
    result = agent.run_sync("try again")

    assert tools.ran == [("refund", args)]
    assert script.last_tool_return().content == "refunded 80.0 on o-7"
    assert result.output == "refunded"
    assert guard.approvals.get(approval_id).status == "consumed"
    assert [(r["effect"], r["rule_id"]) for r in decisions("refund")] == [
        ("require_approval", "refunds-large"), ("allow", f"approval:{approval_id}")]


def test_defer_mode_hands_the_approval_to_pydantic_ai_human_in_the_loop(guard: Guard, decisions: Any) -> None:
    tools = Tools()
    args = {"order": "o-8", "amount_usd": 120}
    script = Script(("refund", args), "done")
    agent = Agent(script.model, output_type=[str, DeferredToolRequests],
                  toolsets=[guard_toolset(tools.toolset(), guard, session=SESSION, approvals="defer")])

    first = agent.run_sync("go")
    assert isinstance(first.output, DeferredToolRequests)
    [call] = first.output.approvals
    approval_id = first.output.metadata[call.tool_call_id]["proctor_approval_id"]
    assert guard.approvals.get(approval_id).status == "pending" and tools.ran == []

    guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
    result = agent.run_sync(message_history=first.all_messages(),
                            deferred_tool_results=DeferredToolResults(approvals={call.tool_call_id: True}))

    assert tools.ran == [("refund", args)]
    assert result.output == "done"
    assert [r["effect"] for r in decisions("refund")] == ["require_approval", "allow"]


def test_approving_only_in_pydantic_ai_does_not_release_the_call(guard: Guard) -> None:
    tools = Tools()
    script = Script(("refund", {"order": "o-9", "amount_usd": 300}), "ok")
    agent = Agent(script.model, output_type=[str, DeferredToolRequests],
                  toolsets=[guard_toolset(tools.toolset(), guard, session=SESSION, approvals="defer")])

    first = agent.run_sync("go")
    assert isinstance(first.output, DeferredToolRequests)
    [call] = first.output.approvals
    agent.run_sync(message_history=first.all_messages(),
                   deferred_tool_results=DeferredToolResults(approvals={call.tool_call_id: True}))

    assert tools.ran == []
    seen = script.last_tool_return()
    assert seen.outcome == "failed" and "is pending" in str(seen.content)


def test_a_terminated_session_stops_the_run(guard: Guard) -> None:
    tools, script = Tools(), Script(("exfiltrate", {"data": "secrets"}), "never")

    with pytest.raises(SessionTerminated, match="Exfiltration attempt"):
        agent_for(script, tools, guard).run_sync("go")
    assert tools.ran == []
    assert len(script.seen) == 1  # the model was not asked again


def test_secrets_in_a_tool_result_are_redacted_before_the_model_sees_them(guard: Guard) -> None:
    tools, script = Tools(), Script(("read_config", {"name": "prod"}), "done")

    agent_for(script, tools, guard).run_sync("go")

    seen = script.last_tool_return()
    assert seen.outcome == "success"
    assert AWS_KEY not in str(seen.content) and "region = eu-west-1" in str(seen.content)


def test_without_a_session_the_toolset_refuses_to_run_a_tool_ungoverned(guard: Guard) -> None:
    tools, script = Tools(), Script(("get_weather", {"city": "Bern"}), "done")
    agent = Agent(script.model, toolsets=[guard_toolset(tools.toolset(), guard)])  # no session anywhere

    with pytest.raises(NoSessionError):
        agent.run_sync("go")
    assert tools.ran == []


def test_the_capability_guards_the_agents_own_tools_and_its_model_calls(guard: Guard, decisions: Any) -> None:
    tools, script = Tools(), Script(("delete_db", {"name": "prod"}), ("get_weather", {"city": "Rome"}), "done")
    agent = Agent(script.model, tools=[tools.get_weather, tools.delete_db],
                  capabilities=[ProctorCapability(guard, session=SESSION, agent="support")])

    assert asyncio.run(agent.run("go")).output == "done"

    assert tools.ran == [("get_weather", {"city": "Rome"})]
    assert [(r["action"], r["target"], r["effect"]) for r in decisions(session_id=SESSION)] == [
        ("llm_call", "scripted", "allow"), ("tool_call", "delete_db", "deny"),
        ("llm_call", "scripted", "allow"), ("tool_call", "get_weather", "allow"),
        ("llm_call", "scripted", "allow")]
    assert guard.session(SESSION).tokens == 3 * 24  # each model call settled with its usage

    greedy = Script("a long essay")
    agent = Agent(greedy.model, capabilities=[ProctorCapability(guard, session="pa-2")],
                  model_settings=ModelSettings(max_tokens=4000))
    with pytest.raises(ActionDenied, match="capped at 1000 tokens"):
        agent.run_sync("write")
    assert greedy.seen == []  # the refused call was never made


def test_the_session_can_come_from_the_run_context(guard: Guard, decisions: Any) -> None:
    tools, script = Tools(), Script(("get_weather", {"city": "Lima"}), "done")
    toolset = guard_toolset(tools.toolset(), guard, session=lambda ctx: ctx.deps["session_id"])
    agent = Agent(script.model, deps_type=dict, toolsets=[toolset])

    agent.run_sync("go", deps={"session_id": "from-deps"})

    assert [r["session_id"] for r in decisions("get_weather")] == ["from-deps"]
