"""The guard in pydantic-ai: a toolset wrapper, and a capability that also checks model calls.

:class:`GuardedToolset` is a ``WrapperToolset``: its ``call_tool`` asks the guard before the
wrapped toolset runs a tool and hands the result back after (budgets settled, result scanned,
maybe redacted). Wrap any toolset with it — a ``FunctionToolset``, an MCP server toolset.
A refused call does not run; it raises ``ToolFailed`` with the refusal, which the model reads as
the tool's (failed) result and can act on. A terminated session raises
:class:`~proctor.guard.SessionTerminated` out of ``agent.run``.

Usage::

    from pydantic_ai import Agent
    from pydantic_ai.toolsets import FunctionToolset
    from proctor.integrations.pydantic_ai import ProctorCapability, guard_toolset

    tools = FunctionToolset([get_weather, refund])
    agent = Agent(model, toolsets=[guard_toolset(tools, guard, session="sess-42", agent="support")])

    # or every tool of the agent (including @agent.tool ones) and every model call:
    agent = Agent(model, tools=[get_weather, refund],
                  capabilities=[ProctorCapability(guard, session="sess-42", agent="support")])

The session: ``session=`` is a GuardSession, an id, or a callable of the ``RunContext``
(e.g. ``lambda ctx: ctx.deps.session_id``); None uses the current ``proctor.session(...)``.

Approvals (``approvals=``): ``"refuse"`` (default) tells the model the approval id and that the
call is pending; the same call runs once a human approved it. ``"defer"`` uses pydantic-ai's
human-in-the-loop flow instead: the call is deferred (``ApprovalRequired``, with
``proctor_approval_id`` in its metadata) and the run ends with ``DeferredToolRequests`` — the
agent's ``output_type`` must allow it. Resume with ``DeferredToolResults(approvals={call_id:
True})`` once a human approved it in Proctor; the guard then consumes the approval (an SDK-side
approval alone does not release the call).

The capability's model check raises :class:`~proctor.guard.ActionDenied` when a model call is
refused (``llm`` rules, budgets); it is settled with the response's token usage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ToolFailed
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.toolsets import AbstractToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from proctor.guard import Guard
from proctor.integrations._gate import SessionSource, ToolGate

Approvals = Literal["refuse", "defer"]


@dataclass
class GuardedToolset(WrapperToolset[Any]):
    """A toolset whose every call the guard checks first. Build one with :func:`guard_toolset`."""

    gate: ToolGate = field(default_factory=ToolGate)
    approvals: Approvals = "refuse"

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any],
                        tool: ToolsetTool[Any]) -> Any:
        verdict = await self.gate.acheck(self.gate.session_for(ctx), name, tool_args)
        if verdict.approval_id is not None and self.approvals == "defer" and not ctx.tool_call_approved:
            raise ApprovalRequired(metadata={"proctor_approval_id": verdict.approval_id, "refusal": verdict.output})
        if verdict.refused:
            raise ToolFailed(verdict.output or "Refused by policy")
        if not verdict.runs or verdict.permit is None:  # a draft: the tool does not run
            return verdict.output
        permit = verdict.permit
        try:
            result = await super().call_tool(name, verdict.args, ctx, tool)
        except (ApprovalRequired, CallDeferred):  # the tool deferred itself: it did not run
            self.gate.finish(permit, None)
            raise
        except Exception as e:
            self.gate.finish(permit, None, error=e)
            raise
        outcome = self.gate.finish(permit, result)
        if outcome.refusal is not None:
            raise ToolFailed(outcome.refusal)
        return outcome.value


def guard_toolset(toolset: AbstractToolset[Any], guard: Guard | None = None, *, session: SessionSource = None,
                  agent: str | None = None, environment: str | None = None, labels: dict[str, str] | None = None,
                  approvals: Approvals = "refuse", approval_wait_s: float | None = None) -> GuardedToolset:
    """``toolset`` with the guard in front of every call (see the module docs)."""
    gate = ToolGate(guard, session=session, agent=agent, environment=environment, labels=labels,
                    approval_wait_s=approval_wait_s)
    return GuardedToolset(toolset, gate=gate, approvals=approvals)


@dataclass(init=False)
class ProctorCapability(AbstractCapability[Any]):
    """Guards every tool of the agent (its assembled toolset) and, unless ``check_model_calls``
    is False, every model request. Arguments as for :func:`guard_toolset`."""

    gate: ToolGate
    approvals: Approvals
    check_model_calls: bool

    def __init__(self, guard: Guard | None = None, *, session: SessionSource = None, agent: str | None = None,
                 environment: str | None = None, labels: dict[str, str] | None = None,
                 approvals: Approvals = "refuse", approval_wait_s: float | None = None,
                 check_model_calls: bool = True) -> None:
        self.gate = ToolGate(guard, session=session, agent=agent, environment=environment, labels=labels,
                             approval_wait_s=approval_wait_s)
        self.approvals = approvals
        self.check_model_calls = check_model_calls

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None  # holds a live guard: not built from agent specs

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        return GuardedToolset(toolset, gate=self.gate, approvals=self.approvals)

    async def wrap_model_request(self, ctx: RunContext[Any], *, request_context: ModelRequestContext,
                                 handler: Callable[[ModelRequestContext], Any]) -> ModelResponse:
        if not self.check_model_calls:
            return await handler(request_context)  # type: ignore[no-any-return]
        settings = request_context.model_settings or {}
        max_tokens = settings.get("max_tokens")
        model = request_context.model_id or request_context.model.model_name
        permit = self.gate.guard.check_llm(self.gate.session_for(ctx), model,
                                           max_tokens=max_tokens if isinstance(max_tokens, int) else None,
                                           prompt=_prompt(request_context.messages))
        try:
            response: ModelResponse = await handler(request_context)
        except Exception as e:
            self.gate.guard.llm_result(permit, None, error=e)
            raise
        self.gate.guard.llm_result(permit, response.text, input_tokens=response.usage.input_tokens,
                                   output_tokens=response.usage.output_tokens)
        return response


def _prompt(messages: list[ModelMessage]) -> list[dict[str, Any]]:
    """The request as plain data for scanners and the prompt digest."""
    out = []
    for m in messages:
        for part in m.parts:
            content = getattr(part, "content", None)
            if content is None:
                content = getattr(part, "args", None)
            if not isinstance(content, (str, int, float, bool, type(None))):
                content = json.loads(json.dumps(content, default=str))
            out.append({"role": getattr(part, "part_kind", m.kind), "content": content})
    return out


__all__ = ["GuardedToolset", "ProctorCapability", "guard_toolset"]
