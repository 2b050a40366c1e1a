"""``proctor.session(...)``: who is acting, stamped on every span started inside it."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status, StatusCode


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    agent: str | None = None
    version: str | None = None
    user: str | None = None
    env: str | None = None
    attributes: tuple[tuple[str, Any], ...] = ()
    stamp: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    version_hash: str | None = None  # the registered version's content hash, when resolved
    policy: Any = field(default=None, compare=False, repr=False)  # its pinned PolicySet

    def __post_init__(self) -> None:
        # computed once per session: on_start runs for every span and must stay cheap
        self.stamp.update(self.span_attributes())

    def span_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"gen_ai.conversation.id": self.session_id}
        if self.agent:
            attrs["gen_ai.agent.name"] = self.agent
        if self.version:
            attrs["gen_ai.agent.version"] = self.version
        if self.version_hash:
            attrs["proctor.agent.version_hash"] = self.version_hash
        if self.user:
            attrs["user.id"] = self.user
        if self.env:
            attrs["proctor.env"] = self.env
        attrs.update(self.attributes)
        return attrs


_current: contextvars.ContextVar[SessionInfo | None] = contextvars.ContextVar("proctor_session", default=None)


def current_session() -> SessionInfo | None:
    return _current.get()


class SessionStampProcessor(SpanProcessor):
    """Stamps the current session's attributes on every span as it starts.

    Spans made by instrumentation libraries (OpenAI, LangChain, ...) inside a session get
    the same conversation id and agent as the SDK's own spans, without the libraries knowing.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        info = _current.get()
        if info is None:
            return
        existing = span.attributes
        if existing:
            span.set_attributes({k: v for k, v in info.stamp.items() if k not in existing})
        else:
            span.set_attributes(info.stamp)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def _tracer() -> trace.Tracer:
    """The tracer of the provider init() made, so a second init() in one process still works
    (OpenTelemetry lets a process set its global provider only once); the global one before."""
    from proctor.sdk import setup  # setup imports this module

    rt = setup._runtime
    provider = rt.provider if rt is not None else trace.get_tracer_provider()
    return provider.get_tracer("proctor.sdk")


@contextmanager
def session(
    agent: str | None = None,
    *,
    version: str | None = None,
    user: str | None = None,
    session_id: str | None = None,
    env: str | None = None,
    span: bool = True,
    attributes: dict[str, Any] | None = None,
) -> Iterator[SessionInfo]:
    """Run a block as one agent session.

    Every span started inside (the SDK's tool spans, instrumented LLM calls, your own) carries
    ``gen_ai.conversation.id`` = the session id, and the agent name, version and user. With
    ``span=True`` (default) the block is also wrapped in an ``invoke_agent`` span, so one run
    forms one trace. Works in sync and async code (it uses contextvars).

    With ``env`` and no ``version``, the registry resolves the version of ``agent`` deployed to
    ``env``: its label and content hash are stamped on every span, and a guard applies the
    policy bundle that version pins. A rollback reaches new sessions within about a second.
    """
    version_hash, policy = None, None
    if agent and env and version is None:  # the registry says which version is live there
        from proctor.sdk.resolve import pinned_policy, resolve

        resolved = resolve(agent, env)
        if resolved is not None:
            version, version_hash, policy = resolved.label, resolved.version_id, pinned_policy(resolved)
    info = SessionInfo(
        session_id=session_id or uuid.uuid4().hex,
        agent=agent,
        version=version,
        user=user,
        env=env,
        attributes=tuple((attributes or {}).items()),
        version_hash=version_hash,
        policy=policy,
    )
    token = _current.set(info)
    try:
        if not span:
            yield info
            return
        tracer = _tracer()
        name = f"invoke_agent {agent}" if agent else "invoke_agent"
        with tracer.start_as_current_span(
            name,
            attributes={"gen_ai.operation.name": "invoke_agent", "proctor.span.kind": "agent"},
            record_exception=False,
            set_status_on_exception=False,
        ) as otel_span:
            try:
                yield info
            except BaseException as exc:
                otel_span.record_exception(exc)
                otel_span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                otel_span.set_attribute("error.type", type(exc).__qualname__)
                raise
    finally:
        _current.reset(token)
