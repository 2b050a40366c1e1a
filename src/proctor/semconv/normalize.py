"""Fill a span's canonical fields from whatever dialect its producer spoke.

``normalize(span)`` reads ``span.attributes`` (and, for the "who" fields, ``span.resource``)
through the table in ``semconv.mapping`` and sets kind, model, provider, tokens, cost, tool,
agent, session, user and error fields in place. Raw attributes are never modified.

This runs once per ingested span, so it makes a single pass over the attributes with a
precomputed key index instead of probing every known key.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from proctor.core import Span, SpanKind, SpanStatus, ToolCallRef
from proctor.semconv.mapping import (
    FIELD_KEYS,
    KIND_FIELD_KEYS,
    KIND_MARKERS,
    RESOURCE_FIELDS,
    SCOPE_DIALECTS,
    TOOL_CALL_PATTERNS,
)

_INT_FIELDS = frozenset(
    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"}
)
_FLOAT_FIELDS = frozenset({"cost_usd"})

# attribute key -> list of (field, priority, dialect); one key may feed two fields
# (gen_ai.request.model fills both model, as a fallback, and request_model).
_INDEX: dict[str, list[tuple[str, int, str]]] = {}
for _field, _keys in FIELD_KEYS.items():
    for _prio, (_key, _dialect) in enumerate(_keys):
        _INDEX.setdefault(_key, []).append((_field, _prio, _dialect))

_RESOURCE_INDEX: dict[str, list[tuple[str, int, str]]] = {
    k: [e for e in v if e[0] in RESOURCE_FIELDS] for k, v in _INDEX.items()
}
_RESOURCE_INDEX = {k: v for k, v in _RESOURCE_INDEX.items() if v}
_TOOL_PREFIXES = tuple(p[0] for p in TOOL_CALL_PATTERNS)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _as_int(value: Any) -> int | None:
    """A count as a 64-bit integer, or None when it is not one (never a value the store refuses)."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, int):
        try:
            value = int(float(value))
        except (TypeError, ValueError, OverflowError):
            return None
    return value if -(2**63) <= value < 2**63 else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) and f >= 0 else None  # a NaN cost would poison every total


def _convert(fld: str, value: Any) -> Any:
    if fld in _INT_FIELDS:
        return _as_int(value)
    if fld in _FLOAT_FIELDS:
        return _as_float(value)
    if fld in ("input_value", "output_value", "tool_arguments", "tool_result"):
        return _as_text(value)
    if isinstance(value, str):
        return value or None
    if value is None or isinstance(value, dict | list):
        return _as_text(value) if value else None
    return str(value)


def _kind(attrs: dict[str, Any]) -> tuple[str | None, str | None]:
    for key, dialect, table in KIND_MARKERS:
        marker = attrs.get(key)
        if marker is not None:
            kind = table.get(str(marker)) or table.get(str(marker).lower())
            if kind:
                return kind, dialect
    return None, None


def _fallback_kind(span: Span) -> str:
    lname = span.name.lower()
    if span.tool_name or lname.startswith(("execute_tool", "running tool")):
        return SpanKind.TOOL.value
    if lname.startswith("handoff") or " handoff" in lname:
        return SpanKind.HANDOFF.value
    if span.model and (span.input_tokens is not None or span.output_tokens is not None):
        return SpanKind.LLM.value
    if span.agent_name and ("agent" in lname or lname.startswith("invoke_agent")):
        return SpanKind.AGENT.value
    if "guardrail" in lname:
        return SpanKind.GUARDRAIL.value
    return SpanKind.OTHER.value


_scope_cache: dict[str | None, str | None] = {}


def _scope_dialect(scope: str | None) -> str | None:
    try:
        return _scope_cache[scope]
    except KeyError:
        pass
    found = None
    if scope:
        for prefix, dialect in SCOPE_DIALECTS:
            if scope.startswith(prefix):
                found = dialect
                break
    if len(_scope_cache) < 10_000:
        _scope_cache[scope] = found
    return found


def _tool_calls_from_flat(keys: list[str], attrs: dict[str, Any]) -> list[ToolCallRef]:
    calls: dict[str, dict[str, Any]] = {}
    for key in keys:
        for prefix, seg, id_s, name_s, args_s in TOOL_CALL_PATTERNS:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            msg, sep, tail = rest.partition(seg)
            if not sep:
                continue
            idx, dot, leaf = tail.partition(".")
            if not dot:
                continue
            slot = calls.setdefault(f"{prefix}{msg}.{idx}", {})
            if leaf == id_s:
                slot["id"] = attrs[key]
            elif leaf == name_s:
                slot["name"] = attrs[key]
            elif leaf == args_s:
                slot["arguments"] = attrs[key]
    return [
        ToolCallRef(id=str(c["id"]), name=c.get("name"), arguments=_as_text(c.get("arguments")))
        for _, c in sorted(calls.items())
        if c.get("id")
    ]


def _tool_calls_from_messages(raw: Any) -> list[ToolCallRef]:
    """Tool calls inside OTel GenAI ``gen_ai.output.messages`` (parts) or OpenAI-style messages."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    out: list[ToolCallRef] = []
    for msg in raw:
        if not isinstance(msg, dict):
            continue
        for part in msg.get("parts") or ():
            if isinstance(part, dict) and part.get("type") == "tool_call" and part.get("id"):
                out.append(ToolCallRef(str(part["id"]), part.get("name"), _as_text(part.get("arguments"))))
        for call in msg.get("tool_calls") or ():
            if isinstance(call, dict) and call.get("id"):
                fn = call.get("function") or {}
                out.append(
                    ToolCallRef(str(call["id"]), fn.get("name") or call.get("name"),
                                _as_text(fn.get("arguments") or call.get("arguments")))
                )
    return out


def _from_responses_output(span: Span, raw: Any) -> list[ToolCallRef]:
    """Tool calls and usage details from an OpenAI Responses object in ``output.value``.

    The OpenAI Agents SDK's OpenInference spans carry the model's output only this way.
    """
    if not isinstance(raw, str) or ('"function_call"' not in raw and '"usage"' not in raw):
        return []
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    responses = doc if isinstance(doc, list) else [doc]
    calls: list[ToolCallRef] = []
    for resp in responses:
        if not isinstance(resp, dict):
            continue
        for item in resp.get("output") or ():
            if isinstance(item, dict) and item.get("type") == "function_call" and item.get("call_id"):
                calls.append(ToolCallRef(str(item["call_id"]), item.get("name"), _as_text(item.get("arguments"))))
        usage = resp.get("usage")
        if isinstance(usage, dict):
            details_in = usage.get("input_tokens_details") or {}
            details_out = usage.get("output_tokens_details") or {}
            if span.cache_read_tokens is None:
                span.cache_read_tokens = _as_int(details_in.get("cached_tokens"))
            if span.cache_write_tokens is None:
                span.cache_write_tokens = _as_int(details_in.get("cache_write_tokens"))
            if span.reasoning_tokens is None:
                span.reasoning_tokens = _as_int(details_out.get("reasoning_tokens"))
    return calls


def normalize(span: Span) -> Span:
    """Fill ``span``'s canonical fields in place and return it."""
    attrs = span.attributes
    best: dict[str, tuple[int, Any]] = {}
    first_dialect: str | None = None
    flat_tool_keys: list[str] = []
    index = _INDEX
    for key, value in attrs.items():
        entries = index.get(key)
        if entries is not None:
            for fld, prio, dialect in entries:
                cur = best.get(fld)
                if cur is None or prio < cur[0]:
                    best[fld] = (prio, value)
                    if first_dialect is None and dialect != "otel":
                        first_dialect = dialect
        elif key.startswith(_TOOL_PREFIXES):
            flat_tool_keys.append(key)

    if span.resource:
        for key, value in span.resource.items():
            for fld, prio, _dialect in _RESOURCE_INDEX.get(key, ()):
                if fld not in best:
                    best[fld] = (prio + 1000, value)

    for fld, (_prio, value) in best.items():
        converted = _convert(fld, value)
        if converted is not None:
            setattr(span, fld, converted)

    if span.model is None and span.request_model:
        span.model = span.request_model
    if span.provider:
        span.provider = span.provider.lower()
    if span.cost_usd is not None:
        span.cost_source = "span"

    kind, marker_dialect = _kind(attrs)
    span.kind = kind if kind is not None else _fallback_kind(span)
    span.dialect = _scope_dialect(span.scope_name) or marker_dialect or first_dialect

    for fld, keys in KIND_FIELD_KEYS.get(span.kind, {}).items():
        if getattr(span, fld) is None:
            for key, _dialect in keys:
                if key in attrs:
                    setattr(span, fld, _convert(fld, attrs[key]))
                    break
    if span.kind == SpanKind.AGENT.value and span.agent_name is None:
        name = span.name
        span.agent_name = name[len("invoke_agent "):] if name.startswith("invoke_agent ") else name

    if span.kind == SpanKind.LLM.value:
        calls = _tool_calls_from_flat(flat_tool_keys, attrs) if flat_tool_keys else []
        if not calls and "gen_ai.output.messages" in attrs:
            calls = _tool_calls_from_messages(attrs["gen_ai.output.messages"])
        if "output.value" in attrs and (not calls or span.cache_read_tokens is None):
            from_output = _from_responses_output(span, attrs["output.value"])
            calls = calls or from_output
        if not calls:
            for ev in span.events:
                # OTel GenAI event mode: a gen_ai.choice event whose message has tool_calls
                if ev.get("name") == "gen_ai.choice":
                    ev_attrs = ev.get("attributes") or {}
                    calls += _tool_calls_from_messages(ev_attrs.get("message") or ev_attrs.get("body"))
        span.tool_calls = calls

    _fill_error(span)
    return span


def _fill_error(span: Span) -> None:
    exc_event = None
    for ev in span.events:
        if ev.get("name") == "exception":
            exc_event = ev.get("attributes") or {}
            break
    if exc_event is not None:
        span.error_type = span.error_type or _as_text(exc_event.get("exception.type"))
        span.error_message = span.error_message or _as_text(exc_event.get("exception.message"))
    if span.status == SpanStatus.ERROR.value:
        span.error_message = span.error_message or span.status_message or span.error_type or "error"
