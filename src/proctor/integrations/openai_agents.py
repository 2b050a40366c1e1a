"""The guard in the OpenAI Agents SDK (``openai-agents``): tool guardrails, approvals, model calls.

Each guarded :class:`agents.FunctionTool` gets a *tool input guardrail* that asks the guard
before the tool runs and a *tool output guardrail* that hands the result back to it (budgets
settled, result scanned and maybe redacted). A refused call does not run: the guardrail
answers ``reject_content`` with the refusal, which the model reads as the tool's output and
can act on. A terminated session raises :class:`~proctor.guard.SessionTerminated` out of
``Runner.run``.

Usage::

    from agents import Agent, Runner, function_tool
    from proctor.guard import Guard
    from proctor.integrations.openai_agents import guard_agent_tools

    guard = Guard("policies/", engine)
    agent = Agent(name="support", tools=[get_weather, refund])
    agent = guard_agent_tools(agent, guard, session="sess-42", agent_name="support-triage")
    result = await Runner.run(agent, "Refund order 7")

    # refund(amount_usd=80) under a require_approval rule: the model reads
    #   "Refused by policy rule refunds-large: Refunds above $50 need a human (approval id 3f…
    #    is pending: …)"
    # and once someone approves 3f… (console, CLI, guard.approvals.decide), the same call runs.

Approvals, two ways (``approvals=``):

- ``"reject"`` (default): the model is told the approval id and that the call is pending, as
  above. Works with any app; the model may retry after a human decided.
- ``"interrupt"``: the SDK's own human-in-the-loop flow. The tool's ``needs_approval`` asks the
  guard; a ``require_approval`` decision interrupts the run (``result.interruptions``) with a
  Proctor approval pending. Once a human decided it in Proctor, resolve the interruptions
  with :meth:`OpenAIAgentsGuard.apply_decisions` (or ``state.approve(item)`` yourself) and
  resume with ``Runner.run(agent, state)``; the guard then consumes the approval and the tool
  runs. Proctor stays the authority: approving only in the SDK does not release the call::

      tools_guard = OpenAIAgentsGuard(guard, session="sess-42", approvals="interrupt")
      agent = tools_guard.guard_agent(agent)
      result = await Runner.run(agent, "Refund order 7")
      for item in result.interruptions:
          print(tools_guard.approval_id(item))          # the Proctor approval to decide
      ...                                              # a human approves it in Proctor
      state = result.to_state()
      await tools_guard.apply_decisions(state)         # approved -> approve, denied -> reject
      result = await Runner.run(agent, state)

Model calls: pass ``hooks=tools_guard.run_hooks()`` to ``Runner.run`` to check each LLM call
(``llm`` rules, token and cost budgets) before it is made and settle it with the usage after;
a refused model call raises :class:`~proctor.guard.ActionDenied` out of ``Runner.run``.

Limitations: tools the SDK builds at run time (``mcp_servers=``, hosted tools, handoffs) are not
``FunctionTool`` objects on the agent and are not guarded here — govern MCP servers with
:mod:`proctor.integrations.mcp`. An exception the SDK turns into a tool error message
(``failure_error_function``) reaches the guard as an ordinary result, not an error.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from agents import Agent, AgentsException, FunctionTool, RunContextWrapper, RunHooks
from agents.items import ModelResponse, ToolApprovalItem
from agents.run_state import RunState
from agents.tool_context import ToolContext
from agents.tool_guardrails import (
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
)

from proctor.guard import ApprovalPending, Guard, GuardSession, Permit, PolicyViolation, SessionTerminated
from proctor.integrations._gate import SessionSource, ToolGate, Verdict, json_args, refusal_text

_MAX_PENDING = 10_000  # verdicts kept between the check and the tool's end, per adapter


class RunTerminated(SessionTerminated, AgentsException):
    """The guard ended the session: ``Runner.run`` stops with this.

    A :class:`~proctor.guard.SessionTerminated` (catch that) that is also an
    ``AgentsException``, so the SDK lets it out as it is instead of wrapping it in a
    ``UserError``.
    """

    def __init__(self, terminated: SessionTerminated) -> None:
        super().__init__(terminated.decision, str(terminated))


class OpenAIAgentsGuard:
    """Guards the function tools (and, through :meth:`run_hooks`, the model calls) of agents.

    ``session``: a GuardSession, a session id, a callable taking the SDK's
    ``RunContextWrapper`` and returning either (e.g. ``lambda ctx: ctx.context.session_id``),
    or None for the current ``proctor.session(...)``. ``agent_name``/``environment`` describe
    the agent to the policy when a session is made from an id.
    """

    def __init__(self, guard: Guard | None = None, *, session: SessionSource = None, agent_name: str | None = None,
                 environment: str | None = None, labels: dict[str, str] | None = None,
                 approvals: Literal["reject", "interrupt"] = "reject",
                 approval_wait_s: float | None = None) -> None:
        if approvals not in ("reject", "interrupt"):
            raise ValueError(f"approvals must be 'reject' or 'interrupt', not {approvals!r}")
        self.gate = ToolGate(guard, session=session, agent=agent_name, environment=environment, labels=labels,
                             approval_wait_s=approval_wait_s)
        self.approvals = approvals
        # call id -> verdict, from the check until the tool finished (or the approval resolved)
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self.input_guardrail: ToolInputGuardrail[Any] = ToolInputGuardrail(self._before, name="proctor_guard")
        self.output_guardrail: ToolOutputGuardrail[Any] = ToolOutputGuardrail(self._after, name="proctor_guard")

    # -- wiring --------------------------------------------------------------------------------

    def guard_tool(self, tool: FunctionTool, agent_name: str | None = None) -> FunctionTool:
        """A copy of ``tool`` that the guard checks before and after it runs. ``agent_name``: the
        agent that calls it, for the approval check (the guardrails read it from the run)."""
        if any(g is self.input_guardrail for g in tool.tool_input_guardrails or ()):
            return tool
        guarded = copy.copy(tool)
        # the guard checks last (a call another guardrail rejects never holds a permit) and
        # settles first (a later guardrail's rejection cannot leave the permit unsettled)
        guarded.tool_input_guardrails = [*(tool.tool_input_guardrails or []), self.input_guardrail]
        guarded.tool_output_guardrails = [self.output_guardrail, *(tool.tool_output_guardrails or [])]
        guarded.on_invoke_tool = _PermitArgs(tool.on_invoke_tool, self)
        if self.approvals == "interrupt":
            guarded.needs_approval = self._needs_approval_for(tool, agent_name)
        return guarded

    def guard_agent(self, agent: Agent[Any]) -> Agent[Any]:
        """A clone of ``agent`` whose function tools are guarded (other tools are kept as they are)."""
        tools = [self.guard_tool(t, agent.name) if isinstance(t, FunctionTool) else t for t in agent.tools]
        return agent.clone(tools=tools)

    def run_hooks(self) -> RunHooks[Any]:
        """Run hooks that check every model call: ``Runner.run(agent, input, hooks=...)``."""
        return ProctorRunHooks(self.gate)

    # -- approvals -----------------------------------------------------------------------------

    def approval_id(self, item: ToolApprovalItem) -> str | None:
        """The Proctor approval an interruption waits for (None if the guard did not ask for one)."""
        verdict = self._verdicts.get(_call_id(item))
        return verdict.approval_id if verdict is not None else None

    async def apply_decisions(self, state: RunState[Any, Any]) -> list[ToolApprovalItem]:
        """Carry Proctor's decisions over to the SDK's interruptions in ``state``: an approved
        approval approves the item, a denied or expired one rejects it with the reason. Returns
        the items still waiting for a human."""
        waiting = []
        for item in state.get_interruptions():
            aid = self.approval_id(item)
            if aid is None:  # not the guard's interruption: the app decides it
                waiting.append(item)
                continue
            approval = self.gate.guard.approvals.get(aid)
            status = approval.status
            if status == "pending":
                waiting.append(item)
            elif status in ("approved", "consumed"):
                state.approve(item)
            else:
                why = f"approval {aid} {status}"
                if approval.decided_by:
                    why += f" by {approval.decided_by}" + (f": {approval.decision_reason}"
                                                            if approval.decision_reason else "")
                state.reject(item, rejection_message=f"Refused by policy: {why}")
        return waiting

    # -- the guardrails ------------------------------------------------------------------------

    def _remember(self, call_id: str, verdict: Verdict) -> None:
        self._verdicts[call_id] = verdict
        self._verdicts.move_to_end(call_id)
        while len(self._verdicts) > _MAX_PENDING:
            self._verdicts.popitem(last=False)

    def _agent(self, gs: GuardSession, name: str | None) -> str | None:
        """The agent the policy sees: the adapter's ``agent_name``, else the session's, else the
        name of the SDK agent making the call."""
        return self.gate.agent or gs.agent or name

    def _needs_approval_for(self, tool: FunctionTool, agent_name: str | None
                            ) -> Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]:
        name = tool.name

        async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
            verdict = self._verdicts.get(call_id)
            if verdict is None:  # the SDK may ask more than once for one call: decide once
                try:
                    gs = self.gate.session_for(ctx)
                    verdict = await self.gate.acheck(gs, name, params, agent=self._agent(gs, agent_name))
                except SessionTerminated as e:
                    raise RunTerminated(e) from e
                self._remember(call_id, verdict)
            return isinstance(verdict.violation, ApprovalPending)

        return needs_approval

    async def _before(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        verdict = self._verdicts.get(ctx.tool_call_id)
        if verdict is None or isinstance(verdict.violation, ApprovalPending):
            # first look, or resumed after an interruption: ask (again) — an approved request is
            # found by its digest and consumed now
            try:
                gs = self.gate.session_for(ctx)
                verdict = await self.gate.acheck(gs, ctx.tool_name, json_args(ctx.tool_arguments),
                                                 agent=self._agent(gs, data.agent.name))
            except SessionTerminated as e:
                raise RunTerminated(e) from e
            self._remember(ctx.tool_call_id, verdict)
        if verdict.output is not None:
            self._verdicts.pop(ctx.tool_call_id, None)
            return ToolGuardrailFunctionOutput.reject_content(verdict.output, output_info=_info(verdict.violation))
        return ToolGuardrailFunctionOutput.allow(output_info=_info(None, verdict.permit))

    async def _after(self, data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        verdict = self._verdicts.pop(data.context.tool_call_id, None)
        if verdict is None or verdict.permit is None or verdict.output is not None:
            return ToolGuardrailFunctionOutput.allow()
        try:
            outcome = self.gate.finish(verdict.permit, data.output)
        except SessionTerminated as e:
            raise RunTerminated(e) from e
        if outcome.refusal is not None:
            return ToolGuardrailFunctionOutput.reject_content(outcome.refusal)
        if outcome.value is not data.output:  # a scanner redacted it: the model sees the redacted value
            value = outcome.value
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            return ToolGuardrailFunctionOutput.reject_content(text, output_info={"redacted": True})
        return ToolGuardrailFunctionOutput.allow()

    def _permit_for(self, call_id: str) -> Permit | None:
        verdict = self._verdicts.get(call_id)
        return verdict.permit if verdict is not None and verdict.output is None else None


class _PermitArgs:
    """The tool's invoker, fed the arguments the permit allows (a scanner rule may have redacted
    them; guardrails cannot change arguments), and reporting a raised error to the guard."""

    def __init__(self, inner: Callable[[ToolContext[Any], str], Awaitable[Any]], owner: OpenAIAgentsGuard) -> None:
        self._inner = inner
        self._owner = owner
        if getattr(inner, "__agents_sync_function_tool__", False):  # the SDK validates timeouts by it
            self.__agents_sync_function_tool__ = True

    def __agents_bind_function_tool__(self, tool: FunctionTool) -> _PermitArgs:
        # FunctionTool.__post_init__ / copy rebind the SDK's own invoker to the tool; keep doing it
        bind = getattr(self._inner, "__agents_bind_function_tool__", None)
        return _PermitArgs(bind(tool), self._owner) if callable(bind) else self

    async def __call__(self, ctx: ToolContext[Any], input: str) -> Any:
        call_id = getattr(ctx, "tool_call_id", None)
        permit = self._owner._permit_for(call_id) if call_id else None
        if permit is not None and permit.decision.effect == "redact":
            input = json.dumps(permit.args, default=str)
        try:
            return await self._inner(ctx, input)
        except Exception as e:
            if permit is not None and call_id:
                self._owner._verdicts.pop(call_id, None)
                self._owner.gate.finish(permit, None, error=e)
            raise


class ProctorRunHooks(RunHooks[Any]):
    """Checks each model call before it is made; settles it with the usage after.

    Get one from :meth:`OpenAIAgentsGuard.run_hooks`. ``Runner.run`` takes one hooks object: to
    keep hooks of your own, subclass this and call ``super()`` in ``on_llm_start``/``on_llm_end``.
    The model is named by the agent's ``model`` (its name, or a model object's ``model``).
    """

    def __init__(self, gate: ToolGate) -> None:
        self.gate = gate
        self._permits: dict[tuple[int, str], Permit] = {}

    async def on_llm_start(self, context: RunContextWrapper[Any], agent: Agent[Any], system_prompt: str | None,
                           input_items: list[Any]) -> None:
        model = agent.model if isinstance(agent.model, str) else getattr(agent.model, "model", None)
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(input_items)
        try:
            gs = self.gate.session_for(context)
            permit = self.gate.guard.check_llm(gs, str(model or "default"), max_tokens=agent.model_settings.max_tokens,
                                               prompt=prompt, agent=self.gate.agent or gs.agent or agent.name)
        except SessionTerminated as e:
            raise RunTerminated(e) from e
        if len(self._permits) > _MAX_PENDING:
            self._permits.clear()
        self._permits[(id(context), agent.name)] = permit

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        permit = self._permits.pop((id(context), agent.name), None)
        if permit is None:
            return
        usage = response.usage
        self.gate.guard.llm_result(permit, None, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


def _call_id(item: ToolApprovalItem) -> str:
    raw = item.raw_item
    value = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
    return str(value or "")


def _info(violation: PolicyViolation | None, permit: Permit | None = None) -> dict[str, Any] | None:
    """What the SDK keeps of the decision (``result.tool_input_guardrail_results``)."""
    if violation is not None:
        info = violation.decision.to_dict()
        info["refusal"] = refusal_text(violation)
        return info
    return permit.decision.to_dict() if permit is not None else None


def guard_agent_tools(agent: Agent[Any], guard: Guard | None = None, session: SessionSource = None, *,
                      agent_name: str | None = None, environment: str | None = None,
                      approvals: Literal["reject", "interrupt"] = "reject") -> Agent[Any]:
    """A clone of ``agent`` whose function tools the guard checks. See :class:`OpenAIAgentsGuard`."""
    return OpenAIAgentsGuard(guard, session=session, agent_name=agent_name, environment=environment,
                             approvals=approvals).guard_agent(agent)


__all__ = ["OpenAIAgentsGuard", "ProctorRunHooks", "RunTerminated", "guard_agent_tools"]
