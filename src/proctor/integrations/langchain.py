"""The guard in LangChain 1.x agents and LangGraph: agent middleware and a guarded ToolNode.

:class:`ProctorMiddleware` is an ``AgentMiddleware`` for ``langchain.agents.create_agent``:

- ``wrap_tool_call`` asks the guard before each tool call. A refused call does not run; the
  model gets a ``ToolMessage`` with ``status="error"`` and the refusal as its content ("Refused
  by policy rule refunds-large: Refunds above $50 need a human (approval id …)"). After the
  tool ran, its result goes back to the guard (budgets settled, result scanned, maybe
  redacted).
- ``wrap_model_call`` checks each model call (``llm`` rules, budgets reserved on
  ``max_tokens``) and settles it with the response's ``usage_metadata``. A refused model call
  raises :class:`~proctor.guard.ActionDenied`: there is no tool message to carry it.

A terminated session raises :class:`~proctor.guard.SessionTerminated` out of ``invoke``.

Usage::

    from langchain.agents import create_agent
    from proctor.integrations.langchain import ProctorMiddleware

    agent = create_agent(model, tools=[get_weather, refund],
                         middleware=[ProctorMiddleware(guard, session_id="sess-42", agent="support")])
    agent.invoke({"messages": [("user", "refund order 7")]})

Plain LangGraph (a ``StateGraph`` with its own tool node)::

    from proctor.integrations.langchain import guarded_tool_node

    graph.add_node("tools", guarded_tool_node([get_weather, refund], guard, session_id="sess-42"))

The session: ``session_id`` (or ``session=``: a GuardSession, or a callable of the
``ToolCallRequest``/``ModelRequest`` returning one or an id); else the current
``proctor.session(...)``; else the LangGraph ``thread_id`` of the run's config.

Limitations: a tool returning a ``Command`` is settled but its messages are not scanned; the
synchronous hooks block on an approval wait when the guard has ``approval_wait_s`` set (the
async ones poll without blocking the loop).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import TOOL_CALL_ERROR_TEMPLATE, ToolCallRequest
from langgraph.types import Command

from proctor.guard import Guard, GuardSession, Permit, SessionTerminated
from proctor.integrations._gate import SessionSource, ToolGate, Verdict

ToolResult = ToolMessage | Command[Any]
ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


def _thread_id() -> str | None:
    """The LangGraph thread id of the run in progress, if it has one."""
    try:
        from langgraph.config import get_config

        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # not inside a runnable
        return None
    tid = configurable.get("thread_id")
    return str(tid) if tid else None


class ProctorToolCalls:
    """The tool-call half of the middleware, usable on its own as a ToolNode wrapper
    (``ToolNode(tools, wrap_tool_call=g.wrap_tool_call, awrap_tool_call=g.awrap_tool_call)``)."""

    def __init__(self, gate: ToolGate) -> None:
        self.gate = gate

    def session(self, request: Any) -> GuardSession:
        return self.gate.session_for(request, _thread_id)

    def _refusal(self, request: ToolCallRequest, verdict: Verdict) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(content=verdict.output or "", tool_call_id=call["id"] or "", name=call["name"],
                           status="error" if verdict.refused else "success")

    def _with_args(self, request: ToolCallRequest, permit: Permit) -> ToolCallRequest:
        if permit.decision.effect != "redact":
            return request
        return request.override(tool_call={**request.tool_call, "args": permit.args})

    def _settle(self, permit: Permit, result: ToolResult) -> ToolResult:
        if not isinstance(result, ToolMessage):
            self.gate.finish(permit, None)
            return result
        error = None
        if result.status == "error":  # the tool failed and ToolNode turned the error into a message
            error = result.content if isinstance(result.content, str) else json.dumps(result.content, default=str)
        outcome = self.gate.finish(permit, result.content, error=error)
        if outcome.refusal is not None:
            return result.model_copy(update={"content": outcome.refusal, "status": "error", "artifact": None})
        if outcome.value is not result.content:  # redacted by a scanner rule
            value = outcome.value
            content = value if isinstance(value, (str, list)) else json.dumps(value, default=str)
            return result.model_copy(update={"content": content, "artifact": None})
        return result

    def wrap_tool_call(self, request: ToolCallRequest,
                       handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        call = request.tool_call
        verdict = self.gate.check(self.session(request), call["name"], dict(call["args"]))
        if not verdict.runs or verdict.permit is None:
            return self._refusal(request, verdict)
        permit = verdict.permit
        try:
            result = handler(self._with_args(request, permit))
        except GraphBubbleUp:  # an interrupt inside the tool: it did not fail, it paused
            self.gate.finish(permit, None)
            raise
        except Exception as e:
            self.gate.finish(permit, None, error=e)
            raise
        return self._settle(permit, result)

    async def awrap_tool_call(self, request: ToolCallRequest,
                              handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        call = request.tool_call
        verdict = await self.gate.acheck(self.session(request), call["name"], dict(call["args"]))
        if not verdict.runs or verdict.permit is None:
            return self._refusal(request, verdict)
        permit = verdict.permit
        try:
            result = await handler(self._with_args(request, permit))
        except GraphBubbleUp:  # an interrupt inside the tool: it did not fail, it paused
            self.gate.finish(permit, None)
            raise
        except Exception as e:
            self.gate.finish(permit, None, error=e)
            raise
        return self._settle(permit, result)


class ProctorMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Agent middleware: the guard before every tool call and every model call.

    ``guard``: a Guard, or None for the process guard. ``session_id`` / ``session``: see the
    module docs. ``agent``, ``environment``, ``labels``: the agent as the policy sees it.
    ``check_model_calls=False`` leaves model calls alone. ``approval_wait_s``: how long to
    wait for a human before telling the model an approval is pending.
    """

    def __init__(self, guard: Guard | None = None, *, session_id: str | None = None, session: SessionSource = None,
                 agent: str | None = None, environment: str | None = None, labels: dict[str, str] | None = None,
                 check_model_calls: bool = True, approval_wait_s: float | None = None) -> None:
        super().__init__()
        self.gate = ToolGate(guard, session=session if session is not None else session_id, agent=agent,
                             environment=environment, labels=labels, approval_wait_s=approval_wait_s)
        self.tool_calls = ProctorToolCalls(self.gate)
        self.check_model_calls = check_model_calls

    # -- tools ---------------------------------------------------------------------------------

    def wrap_tool_call(self, request: ToolCallRequest,
                       handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        return self.tool_calls.wrap_tool_call(request, handler)

    async def awrap_tool_call(self, request: ToolCallRequest,
                              handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        return await self.tool_calls.awrap_tool_call(request, handler)

    # -- models --------------------------------------------------------------------------------

    def _check_model(self, request: ModelRequest[Any]) -> tuple[Permit, ModelRequest[Any]]:
        messages: list[BaseMessage] = list(request.messages)
        if request.system_message is not None:
            messages.insert(0, request.system_message)
        prompt = [{"role": m.type, "content": m.content} for m in messages]
        gs = self.gate.session_for(request, _thread_id)
        permit = self.gate.guard.check_llm(gs, _model_name(request.model), max_tokens=_max_tokens(request),
                                           prompt=prompt)
        if permit.decision.effect == "redact" and isinstance(permit.args, list):
            redacted = [m.model_copy(update={"content": p["content"]}) if p.get("content") != m.content else m
                        for m, p in zip(messages, permit.args, strict=True)]
            if request.system_message is not None:
                system, *rest = redacted
                request = request.override(system_message=system, messages=rest)  # type: ignore[arg-type]
            else:
                request = request.override(messages=redacted)  # type: ignore[arg-type]
        return permit, request

    def _settle_model(self, permit: Permit, result: ModelResult) -> ModelResult:
        response = result.model_response if isinstance(result, ExtendedModelResponse) else result
        messages = [response] if isinstance(response, AIMessage) else response.result
        ai = next((m for m in messages if isinstance(m, AIMessage)), None)
        usage: dict[str, Any] = dict((ai.usage_metadata if ai is not None else None) or {})
        output = ai.content if ai is not None else None
        value = self.gate.guard.llm_result(permit, output, input_tokens=int(usage.get("input_tokens", 0)),
                                           output_tokens=int(usage.get("output_tokens", 0)))
        if ai is None or value is output:
            return result
        new_ai = ai.model_copy(update={"content": value})  # redacted by a scanner rule
        if isinstance(response, AIMessage):
            return new_ai
        response.result = [new_ai if m is ai else m for m in response.result]
        return result

    def wrap_model_call(self, request: ModelRequest[Any],
                        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]) -> ModelResult:
        if not self.check_model_calls:
            return handler(request)
        permit, request = self._check_model(request)
        try:
            result = handler(request)
        except Exception as e:
            self.gate.guard.llm_result(permit, None, error=e)
            raise
        return self._settle_model(permit, result)

    async def awrap_model_call(self, request: ModelRequest[Any],
                               handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]]) -> ModelResult:
        if not self.check_model_calls:
            return await handler(request)
        permit, request = self._check_model(request)
        try:
            result = await handler(request)
        except Exception as e:
            self.gate.guard.llm_result(permit, None, error=e)
            raise
        return self._settle_model(permit, result)


def _model_name(model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return str(getattr(model, "_llm_type", None) or type(model).__name__)


def _max_tokens(request: ModelRequest[Any]) -> int | None:
    settings = request.model_settings or {}
    for source in (settings, request.model.__dict__):
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = source.get(key)
            if isinstance(value, int):
                return value
    return None


def guarded_tool_node(tools: Sequence[BaseTool | Callable[..., Any]], guard: Guard | None = None, *,
                      session_id: str | None = None, session: SessionSource = None, agent: str | None = None,
                      environment: str | None = None, labels: dict[str, str] | None = None,
                      approval_wait_s: float | None = None, **tool_node_kwargs: Any) -> ToolNode:
    """A LangGraph ``ToolNode`` whose every call the guard checks first (see the module docs).

    Other keyword arguments go to ``ToolNode``. With ``handle_tool_errors`` set, a terminated
    session still stops the graph: that error is never turned into a message.
    """
    gate = ToolGate(guard, session=session if session is not None else session_id, agent=agent,
                    environment=environment, labels=labels, approval_wait_s=approval_wait_s)
    calls = ProctorToolCalls(gate)
    handle = tool_node_kwargs.pop("handle_tool_errors", None)
    if handle is not None:
        tool_node_kwargs["handle_tool_errors"] = _never_swallow_termination(handle)
    return ToolNode(list(tools), wrap_tool_call=calls.wrap_tool_call, awrap_tool_call=calls.awrap_tool_call,
                    **tool_node_kwargs)


def _never_swallow_termination(handle: Any) -> Any:
    """``handle_tool_errors`` that lets SessionTerminated through and handles the rest as asked."""
    if handle is False:
        return False
    handled: tuple[type[BaseException], ...] = (Exception,)
    if isinstance(handle, type | tuple):
        handled = handle if isinstance(handle, tuple) else (handle,)
    elif callable(handle):
        try:  # the exception types the handler's annotation names, as ToolNode reads them
            from langgraph.prebuilt.tool_node import _infer_handled_types

            handled = _infer_handled_types(handle)
        except Exception:
            handled = (Exception,)

    def handle_tool_errors(e: Exception) -> str:
        if isinstance(e, SessionTerminated) or not isinstance(e, handled):
            raise e
        if isinstance(handle, str):
            return handle
        if callable(handle) and not isinstance(handle, type):
            return str(handle(e))
        return TOOL_CALL_ERROR_TEMPLATE.format(error=repr(e))

    return handle_tool_errors


__all__ = ["ProctorMiddleware", "ProctorToolCalls", "guarded_tool_node"]
