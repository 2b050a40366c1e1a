"""``@proctor.tool``: record each call of a function as an ``execute_tool`` span."""

from __future__ import annotations

import functools
import inspect
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from proctor.guard.errors import ApprovalPending
from proctor.guard.events import pending_events
from proctor.sdk import governance, setup
from proctor.sdk.context import current_session
from proctor.sdk.recorder import EVENTS_KEY

F = TypeVar("F", bound=Callable[..., Any])
MAX_RECORDED_CHARS = 16_384
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_rand = random.getrandbits
# A proxy until a provider is set, then it delegates; looked up once, not per call.
_tracer = trace.get_tracer("proctor.sdk")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # recording must never fail the agent's call
        return f"<unrepresentable {type(value).__name__}>"


def _to_json(value: Any) -> str:
    try:
        text = orjson.dumps(value, default=_safe_repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except Exception:
        text = _safe_repr(value)
    if len(text) > MAX_RECORDED_CHARS:
        text = text[:MAX_RECORDED_CHARS] + f"…[truncated {len(text) - MAX_RECORDED_CHARS} chars]"
    return text


class _ToolSpec:
    """What is fixed per decorated function: its name and the attributes every call shares."""

    __slots__ = ("base_attrs", "name", "params", "span_name")

    def __init__(self, name: str, description: str | None, side_effect: str | None, params: tuple[str, ...]):
        self.name = name
        self.span_name = f"execute_tool {name}"
        self.params = params
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "proctor.span.kind": "tool",
        }
        if description:
            attrs["gen_ai.tool.description"] = description
        if side_effect:
            attrs["proctor.tool.side_effect"] = side_effect
        self.base_attrs = attrs


class _ToolCall:
    """One call: a recorded span when proctor.init() ran, else an ordinary OTel span."""

    __slots__ = (
        "attrs",
        "ctx",
        "ev_token",
        "events",
        "named",
        "otel_span",
        "parent",
        "permit",
        "recorder",
        "sid",
        "spec",
        "start",
        "tid",
        "token",
    )

    def __init__(self, spec: _ToolSpec, call_id: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.spec = spec
        attrs = dict(spec.base_attrs)
        if call_id:
            attrs["gen_ai.tool.call.id"] = call_id
        # name positional arguments from the signature (cheaper than Signature.bind)
        params = spec.params
        named = dict(zip(params, args, strict=False)) if len(args) <= len(params) else {"args": list(args)}
        if kwargs:
            named.update(kwargs)
        self.named = named
        attrs["gen_ai.tool.call.arguments"] = _to_json(named)
        self.attrs = attrs
        self.recorder = setup.recorder()
        self.otel_span: trace.Span | None = None
        self.permit: Any = None
        self.events: list[Any] | None = None

    def __enter__(self) -> _ToolCall:
        if self.recorder is None:
            span = self.otel_span = _tracer.start_span(self.spec.span_name, attributes=self.attrs)
            self.ctx = trace.use_span(span, end_on_exit=False)
            self.ctx.__enter__()
            return self
        parent = trace.get_current_span().get_span_context()
        self.parent = parent.span_id if parent.is_valid else 0
        self.tid = parent.trace_id if parent.is_valid else _rand(128)
        self.sid = _rand(64)
        ctx = SpanContext(self.tid, self.sid, is_remote=False, trace_flags=_SAMPLED)
        self.token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ctx)))
        self.start = time.time_ns()
        return self

    def check(self) -> Any:
        """Ask the guard (if there is one, inside a session). Raises when the call is refused.

        Returns None to run the call as asked, a Draft to return instead of running, or the
        (redacted) keyword arguments to run it with.
        """
        if governance._guard is None:
            return None
        if self.otel_span is None:  # recorder path: decision events are encoded with this span
            self.events = []
            self.attrs[EVENTS_KEY] = self.events
            token = pending_events.set(self.events)
            try:
                self.permit = governance.check_tool(self.spec.name, self.named)
            finally:
                pending_events.reset(token)
        else:
            self.permit = governance.check_tool(self.spec.name, self.named)
        permit = self.permit
        if permit is None:
            return None
        if permit.draft:
            return governance.Draft(self.spec.name, dict(self.named), permit.decision)
        if permit.args is not self.named:
            # record what the tool really received: the redacted arguments, never the originals
            self.attrs["gen_ai.tool.call.arguments"] = _to_json(permit.args)
            self.attrs["proctor.tool.arguments_redacted"] = True
            return permit.args
        return None

    def finish(self, result: Any, error: BaseException | None = None) -> Any:
        """Hand the result (or error) to the guard; returns the result the caller should see."""
        g = governance._guard
        if self.permit is None or g is None:
            return result
        if self.events is not None:
            token = pending_events.set(self.events)
            try:
                return g.tool_result(self.permit, result, error=error)
            finally:
                pending_events.reset(token)
        return g.tool_result(self.permit, result, error=error)

    def done(self, result: Any) -> None:
        self.attrs["gen_ai.tool.call.result"] = _to_json(result)

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc is not None and isinstance(exc, ApprovalPending):
            # held for a human, not failed: the span says so and stays out of the error counts
            self.attrs["proctor.tool.held_for_approval"] = True
            self.attrs["proctor.approval.id"] = exc.approval.id  # no result: the tool did not run
            exc_type = exc = tb = None
        if self.otel_span is not None:
            span = self.otel_span
            for key in ("gen_ai.tool.call.result", "gen_ai.tool.call.arguments", "proctor.tool.held_for_approval",
                        "proctor.approval.id", "proctor.tool.arguments_redacted"):
                if key in self.attrs:
                    span.set_attribute(key, self.attrs[key])
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc}"))
                span.set_attribute("error.type", exc_type.__qualname__)
            else:
                span.set_status(Status(StatusCode.OK))
            self.ctx.__exit__(exc_type, exc, tb)
            span.end()
            return
        end = time.time_ns()
        otel_context.detach(self.token)
        attrs = self.attrs
        info = current_session()
        if info is not None:
            for k, v in info.stamp.items():
                attrs.setdefault(k, v)
        error = None
        if exc is not None:
            attrs["error.type"] = exc_type.__qualname__
            error = (exc_type.__name__, _safe_str(exc))
        self.recorder.record(  # type: ignore[union-attr]
            (self.tid, self.sid, self.parent, self.spec.span_name, self.start, end, attrs, error)
        )


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return _safe_repr(exc)


@overload
def tool(fn: F) -> F: ...
@overload
def tool(
    fn: None = None, *, name: str | None = None, description: str | None = None, side_effect: str | None = None
) -> Callable[[F], F]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effect: str | None = None,
) -> Any:
    """Record every call of ``fn`` as an ``execute_tool`` span: arguments, result, error, duration.

    Use bare (``@proctor.tool``) or with options (``@proctor.tool(name="crm.lookup",
    side_effect="read")``). Works on sync and async functions. Exceptions are recorded and
    re-raised unchanged. To join the span to the LLM tool call that asked for it, call
    ``fn.call_with_id(tool_call_id, *args, **kwargs)``.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        params = tuple(
            p.name for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        desc = description or (inspect.getdoc(f) or "").split("\n")[0] or None
        spec = _ToolSpec(name or f.__name__, desc, side_effect, params)

        if inspect.iscoroutinefunction(f):

            async def run_async(call_id: str | None, *args: Any, **kwargs: Any) -> Any:
                with _ToolCall(spec, call_id, args, kwargs) as call:
                    if governance._guard is None:  # no policy: the recording-only path
                        result = await f(*args, **kwargs)
                        call.done(result)
                        return result
                    verdict = call.check()
                    if isinstance(verdict, governance.Draft):
                        result = verdict
                    else:
                        try:
                            result = await (f(*args, **kwargs) if verdict is None else f(**verdict))
                        except Exception as e:
                            call.finish(None, e)
                            raise
                        result = call.finish(result)
                    call.done(result)
                    return result

            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await run_async(None, *args, **kwargs)

            async_wrapper.call_with_id = run_async  # type: ignore[attr-defined]
            async_wrapper.tool_name = spec.name  # type: ignore[attr-defined]
            return async_wrapper

        def run(call_id: str | None, *args: Any, **kwargs: Any) -> Any:
            with _ToolCall(spec, call_id, args, kwargs) as call:
                if governance._guard is None:  # no policy: the recording-only path, nothing more
                    result = f(*args, **kwargs)
                    call.done(result)
                    return result
                verdict = call.check()
                if isinstance(verdict, governance.Draft):
                    result = verdict
                else:
                    try:  # with the arguments a scanner rule redacted, if it did
                        result = f(*args, **kwargs) if verdict is None else f(**verdict)
                    except Exception as e:
                        call.finish(None, e)
                        raise
                    result = call.finish(result)
                call.done(result)
                return result

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return run(None, *args, **kwargs)

        wrapper.call_with_id = run  # type: ignore[attr-defined]
        wrapper.tool_name = spec.name  # type: ignore[attr-defined]
        return wrapper

    return wrap(fn) if fn is not None else wrap
