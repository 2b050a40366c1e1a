"""The guard in LangChain 1.x agents (``create_agent`` + middleware) and in plain LangGraph graphs.

A scripted chat model asks for tool calls and records every conversation it was sent, so a
spec can read exactly what the model saw after a tool call: the tool's output, or the guard's
refusal as an error ``ToolMessage``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from pydantic import Field

from proctor.guard import ActionDenied, Guard, SessionTerminated
from proctor.integrations import NoSessionError
from proctor.integrations.langchain import ProctorMiddleware, guarded_tool_node

from .support import AWS_KEY, CONFIG, DENIAL_TEXT, approval_id_in

SESSION = "lc-1"
USAGE = {"input_tokens": 30, "output_tokens": 7, "total_tokens": 37}


class ScriptedChat(BaseChatModel):
    """Answers with the scripted messages in order; remembers what it was sent."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    model_name: str = "scripted-chat"
    max_tokens: int | None = None

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=self.script.pop(0))])

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def last_tool_message(self) -> ToolMessage:
        return [m for m in self.seen[-1] if isinstance(m, ToolMessage)][-1]


def calls(name: str, args: dict[str, Any], call_id: str = "call-1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}], usage_metadata=USAGE)


def answer(text: str = "done") -> AIMessage:
    return AIMessage(content=text, usage_metadata=USAGE)


def scripted(*steps: AIMessage, **kwargs: Any) -> ScriptedChat:
    return ScriptedChat(script=list(steps), **kwargs)


class Tools:
    """LangChain tools that note every call that really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

        @tool
        def get_weather(city: str) -> str:
            """Weather for a city."""
            self.ran.append(("get_weather", {"city": city}))
            return f"Sunny in {city}"

        @tool
        def delete_db(name: str) -> str:
            """Drop a database."""
            self.ran.append(("delete_db", {"name": name}))
            return f"dropped {name}"

        @tool
        def refund(order: str, amount_usd: float) -> str:
            """Refund an order."""
            self.ran.append(("refund", {"order": order, "amount_usd": amount_usd}))
            return f"refunded {amount_usd} on {order}"

        @tool
        def exfiltrate(data: str) -> str:
            """Send data somewhere."""
            self.ran.append(("exfiltrate", {"data": data}))
            return "sent"

        @tool
        def read_config(name: str) -> str:
            """A config file, credentials and all."""
            self.ran.append(("read_config", {"name": name}))
            return CONFIG

        @tool
        def post_note(text: str) -> str:
            """Post a note."""
            self.ran.append(("post_note", {"text": text}))
            return "posted"

        self.all: list[BaseTool] = [get_weather, delete_db, refund, exfiltrate, read_config, post_note]


def agent_for(model: ScriptedChat, tools: Tools, guard: Guard, **kwargs: Any) -> Any:
    middleware = ProctorMiddleware(guard, session_id=SESSION, agent="support", **kwargs)
    return create_agent(model, tools.all, middleware=[middleware])


def ask(agent: Any, text: str = "go") -> list[AnyMessage]:
    return list(agent.invoke({"messages": [("user", text)]})["messages"])


# -- create_agent + ProctorMiddleware -----------------------------------------------------------


def test_an_allowed_tool_runs_and_the_model_sees_its_result(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), scripted(calls("get_weather", {"city": "Paris"}), answer())

    messages = ask(agent_for(model, tools, guard))

    assert tools.ran == [("get_weather", {"city": "Paris"})]
    seen = model.last_tool_message()
    assert (seen.content, seen.status) == ("Sunny in Paris", "success")
    assert messages[-1].content == "done"
    assert [(r["action"], r["target"], r["effect"]) for r in decisions(session_id=SESSION)] == [
        ("llm_call", "scripted-chat", "allow"), ("tool_call", "get_weather", "allow"),
        ("llm_call", "scripted-chat", "allow")]
    assert guard.session(SESSION).tokens == 2 * 37  # both model calls settled from usage_metadata


def test_a_denied_tool_does_not_run_and_the_model_reads_the_refusal(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), scripted(calls("delete_db", {"name": "prod"}), answer("I may not"))

    messages = ask(agent_for(model, tools, guard))

    assert tools.ran == []
    seen = model.last_tool_message()
    assert seen.status == "error"
    assert str(seen.content).startswith(DENIAL_TEXT)
    assert messages[-1].content == "I may not"  # the run went on: the model adapted
    assert [r["effect"] for r in decisions("delete_db")] == ["deny"]


def test_require_approval_names_the_pending_approval_and_the_call_runs_once_approved(
        guard: Guard, decisions: Any) -> None:
    tools = Tools()
    args = {"order": "o-7", "amount_usd": 80}
    model = scripted(calls("refund", args), answer("waiting"), calls("refund", args, "call-2"), answer())
    agent = agent_for(model, tools, guard)

    ask(agent)
    approval_id = approval_id_in(str(model.last_tool_message().content))
    assert model.last_tool_message().status == "error"
    assert tools.ran == []
    assert guard.approvals.get(approval_id).status == "pending"

    guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
    ask(agent, "try again")

    assert tools.ran == [("refund", args)]
    assert model.last_tool_message().content == "refunded 80.0 on o-7"
    assert guard.approvals.get(approval_id).status == "consumed"
    assert [(r["effect"], r["rule_id"]) for r in decisions("refund")] == [
        ("require_approval", "refunds-large"), ("allow", f"approval:{approval_id}")]


def test_async_agents_wait_for_a_human_without_blocking_the_loop(guard: Guard) -> None:
    tools = Tools()
    args = {"order": "o-8", "amount_usd": 99}
    model = scripted(calls("refund", args), answer())
    agent = agent_for(model, tools, guard, approval_wait_s=10)

    def approve_when_asked() -> None:
        for _ in range(200):
            pending = guard.approvals.list(status="pending")
            if pending:
                guard.approvals.decide(pending[0].id, approved=True, by="alice", reason="ok")
                return
            threading.Event().wait(0.05)

    approver = threading.Thread(target=approve_when_asked)
    approver.start()
    asyncio.run(agent.ainvoke({"messages": [("user", "go")]}))
    approver.join(10)

    assert tools.ran == [("refund", args)]  # in the same run, once approved
    assert model.last_tool_message().content == "refunded 99.0 on o-8"


def test_a_terminated_session_stops_the_run(guard: Guard) -> None:
    tools, model = Tools(), scripted(calls("exfiltrate", {"data": "secrets"}), answer("never"))

    with pytest.raises(SessionTerminated, match="Exfiltration attempt"):
        ask(agent_for(model, tools, guard))
    assert tools.ran == []
    assert len(model.seen) == 1  # the model was not asked again


def test_a_model_call_the_policy_refuses_is_never_made(guard: Guard, decisions: Any) -> None:
    tools, model = Tools(), scripted(answer("long essay"), max_tokens=4000)

    with pytest.raises(ActionDenied, match="capped at 1000 tokens"):
        ask(agent_for(model, tools, guard))
    assert model.seen == []
    assert [(r["action"], r["effect"], r["rule_id"]) for r in decisions(session_id=SESSION)] == [
        ("llm_call", "deny", "no-long-answers")]


def test_scanners_redact_arguments_before_and_results_after_the_tool(guard: Guard, decisions: Any) -> None:
    tools = Tools()
    model = scripted(calls("post_note", {"text": f"key {AWS_KEY}"}), calls("read_config", {"name": "prod"}, "c2"),
                     answer())

    ask(agent_for(model, tools, guard))

    assert [name for name, _ in tools.ran] == ["post_note", "read_config"]
    assert AWS_KEY not in tools.ran[0][1]["text"]  # the tool got the redacted argument
    seen = model.last_tool_message()
    assert AWS_KEY not in str(seen.content) and "region = eu-west-1" in str(seen.content)
    assert [(r["target"], r["effect"]) for r in decisions(session_id=SESSION) if r["action"] != "llm_call"] == [
        ("post_note", "redact"), ("read_config", "allow"), ("read_config", "redact")]


def test_without_a_session_the_middleware_refuses_to_run_a_tool_ungoverned(guard: Guard) -> None:
    tools, model = Tools(), scripted(calls("get_weather", {"city": "Bern"}), answer())
    agent = create_agent(model, tools.all, middleware=[ProctorMiddleware(guard, check_model_calls=False)])

    with pytest.raises(NoSessionError):
        ask(agent)  # no session id, no proctor.session(...), no LangGraph thread
    assert tools.ran == []


# -- plain LangGraph -------------------------------------------------------------------------


def graph_for(model: ScriptedChat, tools: Tools, guard: Guard, **kwargs: Any) -> Any:
    """The classic two-node graph: the model, then the (guarded) tools, until the model answers."""

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", guarded_tool_node(tools.all, guard, agent="support", **kwargs))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()


def test_langgraph_tool_node_runs_allowed_calls_and_refuses_the_rest(guard: Guard, decisions: Any) -> None:
    tools = Tools()
    model = scripted(
        AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "a"},
                                          {"name": "delete_db", "args": {"name": "prod"}, "id": "b"}]),
        answer())
    graph = graph_for(model, tools, guard)

    graph.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "thread-9"}})

    assert tools.ran == [("get_weather", {"city": "Oslo"})]
    seen = {m.tool_call_id: m for m in model.seen[-1] if isinstance(m, ToolMessage)}
    assert (seen["a"].content, seen["a"].status) == ("Sunny in Oslo", "success")
    assert seen["b"].status == "error" and str(seen["b"].content).startswith(DENIAL_TEXT)
    # no session was named: the LangGraph thread is the session
    assert [(r["target"], r["effect"]) for r in decisions(session_id="thread-9")] == [
        ("get_weather", "allow"), ("delete_db", "deny")]


def test_langgraph_approval_then_retry(guard: Guard, decisions: Any) -> None:
    tools = Tools()
    args = {"order": "o-5", "amount_usd": 75}
    model = scripted(calls("refund", args), answer(), calls("refund", args, "call-2"), answer())
    graph = graph_for(model, tools, guard, session_id=SESSION)

    graph.invoke({"messages": [("user", "go")]})
    approval_id = approval_id_in(str(model.last_tool_message().content))
    assert guard.approvals.get(approval_id).status == "pending" and tools.ran == []

    guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
    graph.invoke({"messages": [("user", "again")]})

    assert tools.ran == [("refund", args)]
    assert [r["effect"] for r in decisions("refund")] == ["require_approval", "allow"]


def test_langgraph_termination_is_never_turned_into_a_tool_message(guard: Guard) -> None:
    tools, model = Tools(), scripted(calls("exfiltrate", {"data": "x"}), answer("never"))
    graph = graph_for(model, tools, guard, session_id=SESSION, handle_tool_errors=True)

    with pytest.raises(SessionTerminated):
        graph.invoke({"messages": [("user", "go")]})
    assert tools.ran == [] and len(model.seen) == 1
