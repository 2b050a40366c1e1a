"""What every framework adapter shares: finding the session, asking the guard, and turning its
verdict into something a model can read.

An adapter sits where a framework is about to run a tool. It asks :class:`ToolGate` for a
:class:`Verdict` and then either runs the tool (with ``verdict.args``: a scanner rule may have
redacted them) or hands the model ``verdict.output`` instead. A refused call becomes a tool
error message the model reads, so the agent can adapt; only a terminated session stops the
run, by letting :class:`~proctor.guard.SessionTerminated` propagate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proctor.guard import ApprovalPending, Guard, GuardSession, Permit, PolicyViolation, SessionTerminated
from proctor.sdk import governance
from proctor.sdk.context import current_session

#: How an adapter is told which session a call belongs to: a guard session, a session id, a
#: function of the framework's run context returning either, or None for the current
#: ``proctor.session(...)``.
SessionSource = GuardSession | str | Callable[[Any], "GuardSession | str | None"] | None


class NoSessionError(RuntimeError):
    """An adapter was asked to govern a call it cannot place in a session.

    Raised rather than letting the call through: an adapter someone installed is meant to
    govern, so an ungoverned call would be a silent hole.
    """


def refusal_text(violation: PolicyViolation) -> str:
    """The tool error a model reads when the guard refuses a call.

    ``Refused by policy rule refunds-large: Refunds above $50 need a human (approval id …)``
    """
    d = violation.decision
    text = f"Refused by policy rule {d.rule_id}" if d.rule_id else "Refused by policy"
    if d.message:
        text += f": {d.message}"
    if isinstance(violation, ApprovalPending):
        text += (f" (approval id {violation.approval.id} is pending: a human must approve it; "
                 "call the tool again with the same arguments once it is approved)")
    elif d.approval_id:
        text += f" (approval id {d.approval_id})"
    return text


def draft_text(tool: str, args: Any) -> str:
    """What a draft-only agent's side-effecting call returns instead of running."""
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items()) if isinstance(args, dict) else repr(args)
    return f"[draft — not executed] {tool}({shown})"


@dataclass(slots=True)
class Verdict:
    """The guard's answer for one tool call, in the shape adapters need.

    Run the tool with :attr:`args` when :attr:`output` is None; otherwise do not run it and
    give the model :attr:`output` (an error when :attr:`refused`, a draft otherwise).
    """

    permit: Permit | None
    output: str | None = None
    violation: PolicyViolation | None = None

    @property
    def refused(self) -> bool:
        return self.violation is not None

    @property
    def runs(self) -> bool:
        return self.output is None

    @property
    def args(self) -> Any:
        return self.permit.args if self.permit is not None else None

    @property
    def approval_id(self) -> str | None:
        """The pending approval this call waits for, if it does."""
        v = self.violation
        return v.approval.id if isinstance(v, ApprovalPending) else None


@dataclass(slots=True)
class Outcome:
    """What the model gets after the tool ran: the (maybe redacted) result, or a refusal."""

    value: Any
    refusal: str | None = None


class ToolGate:
    """The guard as adapters use it.

    ``guard``: a :class:`~proctor.guard.Guard`, or None for the process guard that
    ``proctor.init(policy=...)`` / ``proctor.use_guard`` installed. ``session``: see
    :data:`SessionSource`. ``agent``, ``environment``, ``labels``: used when a session is
    created from an id. ``approval_wait_s``: how long an async adapter waits (without blocking
    its event loop) for a human to decide before telling the model the approval is pending;
    None uses the guard's ``approval_wait_s``.
    """

    def __init__(self, guard: Guard | None = None, *, session: SessionSource = None, agent: str | None = None,
                 environment: str | None = None, labels: dict[str, str] | None = None,
                 approval_wait_s: float | None = None) -> None:
        self._guard = guard
        self._session = session
        self.agent = agent
        self.environment = environment
        self.labels = labels
        self.approval_wait_s = approval_wait_s

    @property
    def guard(self) -> Guard:
        g = self._guard if self._guard is not None else governance.guard()
        if g is None:
            raise NoSessionError("no Proctor guard: pass guard=... or call proctor.init(policy=...) first")
        return g

    def session_for(self, context: Any = None, fallback_id: Callable[[], str | None] | None = None) -> GuardSession:
        """The guard session for a call. ``context`` is the framework's run context, handed to a
        callable ``session``; ``fallback_id`` names a session when nothing else does (e.g. a
        LangGraph thread id)."""
        source = self._session
        if callable(source) and not isinstance(source, GuardSession):
            source = source(context)
        if isinstance(source, GuardSession):
            return source
        if isinstance(source, str):
            return self.guard.session(source, agent=self.agent, environment=self.environment, labels=self.labels)
        info = current_session()
        if info is not None:  # inside proctor.session(...): the SDK's session, with this adapter's guard
            return self.guard.session(info.session_id, agent=info.agent or self.agent,
                                      environment=info.env or self.environment, version=info.version,
                                      labels={k[len("label."):]: str(v) for k, v in info.attributes
                                              if k.startswith("label.")} or self.labels)
        sid = fallback_id() if fallback_id is not None else None
        if sid:
            return self.guard.session(sid, agent=self.agent, environment=self.environment, labels=self.labels)
        raise NoSessionError("no Proctor session for this call: pass session=... to the adapter "
                             "or run the agent inside proctor.session(...)")

    # -- before --------------------------------------------------------------------------------

    def check(self, gs: GuardSession, tool: str, args: dict[str, Any], *, agent: str | None = None,
              wait_s: float | None = None) -> Verdict:
        """Ask the guard. Raises only :class:`SessionTerminated`; every other refusal comes back
        as a verdict with a model-readable ``output``. ``agent`` names the calling agent when it
        is not the session's (a multi-agent run)."""
        try:
            permit = self.guard.check_tool(gs, tool, args, agent=agent, wait_for_approval_s=wait_s)
        except SessionTerminated:
            raise
        except PolicyViolation as e:
            return Verdict(None, refusal_text(e), e)
        if permit.draft:
            return Verdict(permit, draft_text(tool, args))
        return Verdict(permit)

    async def acheck(self, gs: GuardSession, tool: str, args: dict[str, Any], *,
                     agent: str | None = None) -> Verdict:
        """:meth:`check` for async frameworks: never blocks the event loop on a human; waits for
        an approval with ``approval_wait_s`` by polling asynchronously, then asks again."""
        verdict = self.check(gs, tool, args, agent=agent, wait_s=0)
        wait = self.approval_wait_s if self.approval_wait_s is not None else self.guard.approval_wait_s
        if wait and isinstance(verdict.violation, ApprovalPending):
            status = await verdict.violation.approval.wait_async(wait)
            if status == "approved":  # the guard finds the approved request by digest and consumes it
                verdict = self.check(gs, tool, args, agent=agent, wait_s=0)
        return verdict

    # -- after ---------------------------------------------------------------------------------

    def finish(self, permit: Permit, result: Any, *, error: BaseException | str | None = None) -> Outcome:
        """Hand the tool's result (or error) to the guard: settles budgets, scans the result.
        Raises only :class:`SessionTerminated`."""
        try:
            return Outcome(self.guard.tool_result(permit, result, error=error))
        except SessionTerminated:
            raise
        except PolicyViolation as e:
            return Outcome(None, refusal_text(e))


def json_args(raw: str | None) -> dict[str, Any]:
    """Tool arguments as the model sent them (a JSON object); anything else under ``_raw``."""
    import json

    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": value}


__all__ = ["NoSessionError", "Outcome", "SessionSource", "ToolGate", "Verdict", "draft_text", "json_args",
           "refusal_text"]
