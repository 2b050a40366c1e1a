"""``@proctor.tool``: record each call of a function as an ``execute_tool`` span."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

import orjson
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

F = TypeVar("F", bound=Callable[..., Any])
# A proxy until init() sets the provider, then it delegates; looked up once, not per call.
_tracer = trace.get_tracer("proctor.sdk")
MAX_RECORDED_CHARS = 16_384


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


class _ToolCall:
    """The span around one tool call; ends it with the result or the error."""

    def __init__(self, name: str, description: str | None, side_effect: str | None, params: tuple[str, ...],
                 call_id: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
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
        if call_id:
            attrs["gen_ai.tool.call.id"] = call_id
        # name the positional arguments from the signature (cheaper than Signature.bind)
        named = dict(zip(params, args, strict=False)) if len(args) <= len(params) else {"args": list(args)}
        if kwargs:
            named.update(kwargs)
        attrs["gen_ai.tool.call.arguments"] = _to_json(named)
        self.span = _tracer.start_span(f"execute_tool {name}", attributes=attrs)
        self.ctx = trace.use_span(self.span, end_on_exit=False)

    def __enter__(self) -> _ToolCall:
        self.ctx.__enter__()
        return self

    def done(self, result: Any) -> None:
        self.span.set_attribute("gen_ai.tool.call.result", _to_json(result))
        self.span.set_status(Status(StatusCode.OK))

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc}"))
            self.span.set_attribute("error.type", exc_type.__qualname__)
        self.ctx.__exit__(exc_type, exc, tb)
        self.span.end()


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
        tool_name = name or f.__name__
        desc = description or (inspect.getdoc(f) or "").split("\n")[0] or None
        params = tuple(
            p.name for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )

        if inspect.iscoroutinefunction(f):

            async def run_async(call_id: str | None, *args: Any, **kwargs: Any) -> Any:
                with _ToolCall(tool_name, desc, side_effect, params, call_id, args, kwargs) as call:
                    result = await f(*args, **kwargs)
                    call.done(result)
                    return result

            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await run_async(None, *args, **kwargs)

            async_wrapper.call_with_id = run_async  # type: ignore[attr-defined]
            async_wrapper.tool_name = tool_name  # type: ignore[attr-defined]
            return async_wrapper

        def run(call_id: str | None, *args: Any, **kwargs: Any) -> Any:
            with _ToolCall(tool_name, desc, side_effect, params, call_id, args, kwargs) as call:
                result = f(*args, **kwargs)
                call.done(result)
                return result

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return run(None, *args, **kwargs)

        wrapper.call_with_id = run  # type: ignore[attr-defined]
        wrapper.tool_name = tool_name  # type: ignore[attr-defined]
        return wrapper

    return wrap(fn) if fn is not None else wrap
