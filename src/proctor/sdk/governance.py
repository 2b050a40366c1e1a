"""The SDK's governance face: the process guard, and the checks around tools and model calls.

``proctor.init(policy="policies/")`` (or ``PROCTOR_POLICY``) makes a guard; so does
``proctor.use_guard(Guard(...))``. Inside ``proctor.session(...)``:

- every ``@proctor.tool`` call is checked before it runs and its result after;
- ``with proctor.llm_call(model, max_tokens=..., prompt=...) as call: ...; call.done(...)``
  guards a model call the SDK does not see (framework adapters do this for you);
- ``proctor.check_input(text, source="email")`` scans content coming in.

Outside a session, or without a guard, these are no-ops: the guard governs sessions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proctor.policy.model import Decision
from proctor.sdk.context import SessionInfo, current_session

if TYPE_CHECKING:  # the guard (CEL, SQLAlchemy, ...) loads only when a policy makes one
    from proctor.guard import Guard, GuardSession, Permit

_guard: Guard | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """What a draft-only agent gets instead of running a side-effecting tool."""

    tool: str
    args: dict[str, Any]
    decision: Decision

    def __str__(self) -> str:
        return f"[draft — not executed] {self.tool}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


def use_guard(guard: Guard | None) -> Guard | None:
    """Install ``guard`` as this process's guard (None removes it); returns the previous one."""
    global _guard
    prev, _guard = _guard, guard
    return prev


def ensure_guard(engine: Any) -> Guard:
    """The process guard, made on first need (a resolved version pins a policy) with no bundles
    of its own: each session then brings its version's pinned bundle."""
    global _guard
    if _guard is None:
        from proctor.guard import Guard
        from proctor.policy.engine import PolicySet

        _guard = Guard(PolicySet(()), engine)
    return _guard


def guard() -> Guard | None:
    """The process guard, if ``init(policy=...)`` or ``use_guard`` made one."""
    return _guard


def guard_session(info: SessionInfo | None = None) -> GuardSession | None:
    g = _guard
    if g is None:
        return None
    info = info or current_session()
    if info is None:
        return None
    return g.session(info.session_id, agent=info.agent, environment=info.env, version=info.version,
                     policy=info.policy,
                     labels={k[len("label."):]: str(v) for k, v in info.attributes if k.startswith("label.")}
                     or None)


def check_tool(tool: str, args: dict[str, Any]) -> Permit | None:
    """The guard's verdict for a tool call in the current session, or None when ungoverned."""
    g = _guard
    if g is None:
        return None
    info = current_session()
    gs = guard_session(info)
    if gs is None or info is None:
        return None
    return g.check_tool(gs, tool, args, agent=info.agent)  # the acting agent, not the session's first


class LlmCall:
    """A guarded model call. Call :meth:`done` with the usage once the model answered."""

    __slots__ = ("output", "permit")

    def __init__(self, permit: Permit | None) -> None:
        self.permit = permit
        self.output: Any = None

    @property
    def prompt(self) -> Any:
        """The prompt to send: redacted if a scanner rule said so."""
        return self.permit.args if self.permit is not None else None

    def done(self, output: Any = None, *, input_tokens: int = 0, output_tokens: int = 0,
             cost_usd: float | None = None) -> Any:
        """Settle the budget reservation with the real usage; returns the output to use."""
        if self.permit is None or _guard is None:
            self.output = output
            return output
        self.output = _guard.llm_result(self.permit, output, input_tokens=input_tokens,
                                        output_tokens=output_tokens, cost_usd=cost_usd)
        return self.output


@contextmanager
def llm_call(model: str, *, max_tokens: int | None = None, prompt: Any = None) -> Iterator[LlmCall]:
    """Guard a model call: checked (and its worst case reserved) on entry, settled by ``done``.

    If the block raises before ``done``, the reservation is released as an error step.
    """
    g = _guard
    info = current_session()
    gs = guard_session(info) if g is not None else None
    permit = (g.check_llm(gs, model, max_tokens=max_tokens, prompt=prompt, agent=info.agent if info else None)
              if g is not None and gs is not None else None)
    call = LlmCall(permit)
    try:
        yield call
    except BaseException as exc:
        if permit is not None and g is not None and not permit.settled:
            g.llm_result(permit, None, error=exc)
        raise
    if permit is not None and g is not None and not permit.settled:
        g.llm_result(permit, call.output)


def check_input(content: Any, *, source: str | None = None) -> Any:
    """Scan content entering the session; values from an untrusted ``source`` are tracked."""
    g = _guard
    info = current_session()
    gs = guard_session(info) if g is not None else None
    if g is None or gs is None:
        return content
    return g.check_input(gs, content, source=source, agent=info.agent if info else None)
