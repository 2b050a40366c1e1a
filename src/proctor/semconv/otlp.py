"""Decoding OTLP trace requests (protobuf and JSON) into raw ``core.Span`` objects.

Only the wire format is handled here: ids, times, status, attributes, events, links, resource.
Filling the canonical fields (kind, model, tokens, ...) is ``semconv.normalize``'s job.
Each span is validated on its own, so one bad span is rejected with a reason while the rest
of the batch goes on.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from proctor.core import Span, SpanStatus

_OTEL_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_OTEL_KIND_NAMES = {f"SPAN_KIND_{k.upper()}": k for k in _OTEL_KINDS}
_STATUS = (SpanStatus.UNSET.value, SpanStatus.OK.value, SpanStatus.ERROR.value)
_STATUS_NAMES = {"STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_NS_PER_DAY = 86_400 * 10**9


class OTLPDecodeError(ValueError):
    """The request body is not a valid OTLP ExportTraceServiceRequest."""


@dataclass(slots=True)
class DecodeLimits:
    """Bounds on what one span may carry. Strings over ``max_attribute_chars`` are truncated."""

    max_attribute_chars: int = 32_768
    max_past_days: float = 366.0
    max_future_seconds: float = 86_400.0


@dataclass(slots=True)
class DecodedBatch:
    spans: list[Span] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # one reason per rejected span
    truncated_values: int = 0


class _Ctx:
    """Per-request state shared by the value converters."""

    __slots__ = ("hi_ns", "limit", "lo_ns", "truncated")

    def __init__(self, limits: DecodeLimits) -> None:
        now = time.time_ns()
        self.limit = limits.max_attribute_chars
        self.lo_ns = now - int(limits.max_past_days * _NS_PER_DAY)
        self.hi_ns = now + int(limits.max_future_seconds * 1e9)
        self.truncated = 0

    def clip(self, s: str) -> str:
        if len(s) > self.limit:
            self.truncated += 1
            return f"{s[: self.limit]}…[truncated {len(s) - self.limit} chars by proctor]"
        return s

    def check_times(self, start: int, end: int) -> str | None:
        if start <= 0 or end <= 0:
            return "start or end time missing"
        if end < start:
            return "end time before start time"
        if start < self.lo_ns or start > self.hi_ns:
            return f"start time {_iso(start)} is too far from now"
        return None


def _iso(ns: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))
    except (OverflowError, OSError, ValueError):
        return str(ns)


# ---------------------------------------------------------------------------------------------
# protobuf


def encode_value(v: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (the inverse of decoding; dicts become kvlists)."""
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[encode_value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=encode_attributes(v)))
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    return AnyValue(string_value=str(v))


def encode_attributes(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=encode_value(v)) for k, v in attrs.items()]


def _pb_value(v: Any, ctx: _Ctx) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        s = v.string_value
        return ctx.clip(s) if len(s) > ctx.limit else s
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return [_pb_value(x, ctx) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value, ctx) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def _pb_attrs(kvs: Any, ctx: _Ctx) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value, ctx) for kv in kvs}


def decode_protobuf(body: bytes, limits: DecodeLimits | None = None) -> DecodedBatch:
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OTLPDecodeError(f"body is not an OTLP ExportTraceServiceRequest protobuf: {exc}") from exc
    ctx = _Ctx(limits or DecodeLimits())
    out = DecodedBatch()
    for rs in req.resource_spans:
        resource = _pb_attrs(rs.resource.attributes, ctx)
        service = resource.get("service.name")
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for ps in ss.spans:
                tid, sid, pid = ps.trace_id.hex(), ps.span_id.hex(), ps.parent_span_id.hex() or None
                reason = _check_ids(tid, sid, pid) or ctx.check_times(
                    ps.start_time_unix_nano, ps.end_time_unix_nano
                )
                if reason:
                    out.rejected.append(f"span {sid or '?'} ({ps.name!r}): {reason}")
                    continue
                st = ps.status
                events, links = ps.events, ps.links
                out.spans.append(
                    Span(
                        trace_id=tid,
                        span_id=sid,
                        parent_span_id=pid,
                        name=ps.name or "(unnamed)",
                        start_ns=ps.start_time_unix_nano,
                        end_ns=ps.end_time_unix_nano,
                        otel_kind=_OTEL_KINDS[ps.kind] if 0 <= ps.kind < len(_OTEL_KINDS) else None,
                        status=_STATUS[st.code] if 0 <= st.code < 3 else SpanStatus.UNSET.value,
                        status_message=st.message or None,
                        service_name=service,
                        scope_name=scope,
                        attributes=_pb_attrs(ps.attributes, ctx),
                        resource=resource,
                        events=[
                            {"name": e.name, "time_ns": e.time_unix_nano, "attributes": _pb_attrs(e.attributes, ctx)}
                            for e in events
                        ] if events else [],
                        links=[
                            {
                                "trace_id": ln.trace_id.hex(),
                                "span_id": ln.span_id.hex(),
                                "attributes": _pb_attrs(ln.attributes, ctx),
                            }
                            for ln in links
                        ] if links else [],
                    )
                )
    out.truncated_values = ctx.truncated
    return out


def _check_ids(tid: str, sid: str, pid: str | None) -> str | None:
    if len(tid) != 32 or tid == _ZERO_TRACE:
        return "invalid trace id (need 16 non-zero bytes)"
    if len(sid) != 16 or sid == _ZERO_SPAN:
        return "invalid span id (need 8 non-zero bytes)"
    if pid is not None and (len(pid) != 16):
        return "invalid parent span id (need 8 bytes or empty)"
    return None


# ---------------------------------------------------------------------------------------------
# JSON (OTLP/HTTP JSON encoding: lowerCamelCase keys, hex ids, 64-bit ints as strings)


def _get(d: dict[str, Any], camel: str, snake: str | None = None) -> Any:
    v = d.get(camel)
    if v is None and snake is not None:
        v = d.get(snake)
    return v


def _json_id(value: Any, nbytes: int) -> str:
    if not value:
        return ""
    if not isinstance(value, str):
        raise ValueError("id is not a string")
    if len(value) == nbytes * 2:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:  # some producers send the protobuf-JSON default, base64
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"id {value!r} is neither hex nor base64") from exc
    return raw.hex()


def _json_int(value: Any) -> int:
    if value is None or value == "":
        return 0
    return int(value)


# Nested arrays/maps deeper than this are cut with a marker: the stored JSON must stay within
# what the JSON encoder accepts (orjson: 255 levels). Protobuf bodies cannot get this deep
# (upb's parser stops at 100 message levels).
MAX_VALUE_DEPTH = 64
_TOO_DEEP = "…[nested deeper than 64 levels, cut by proctor]"


def _json_value(v: Any, ctx: _Ctx, depth: int = 0) -> Any:
    if not isinstance(v, dict):
        return v  # tolerate producers that send bare values
    for key, conv in _JSON_VALUE_KINDS:
        if key in v:
            return conv(v[key], ctx, depth) if conv in _NESTED else conv(v[key], ctx)
    return None


def _json_array(a: Any, ctx: _Ctx, depth: int = 0) -> Any:
    if depth >= MAX_VALUE_DEPTH:
        return _TOO_DEEP
    return [_json_value(x, ctx, depth + 1) for x in (a or {}).get("values", [])]


def _json_kvlist(a: Any, ctx: _Ctx, depth: int = 0) -> Any:
    if depth >= MAX_VALUE_DEPTH:
        return _TOO_DEEP
    return {kv["key"]: _json_value(kv.get("value"), ctx, depth + 1) for kv in (a or {}).get("values", [])}


def _json_str(s: Any, ctx: _Ctx) -> Any:
    return ctx.clip(s) if isinstance(s, str) and len(s) > ctx.limit else s


def _int64(x: Any) -> int | str:
    """OTLP intValue is int64; a JSON producer can send more digits. Keep such a value as text
    rather than fail the batch later (the stored JSON holds 64-bit integers only)."""
    i = int(x)
    return i if -(2**63) <= i < 2**63 else str(x)


_NESTED: frozenset[Callable[..., Any]] = frozenset({_json_array, _json_kvlist})
_JSON_VALUE_KINDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("stringValue", _json_str),
    ("string_value", _json_str),
    ("intValue", lambda x, _c: _int64(x)),
    ("int_value", lambda x, _c: _int64(x)),
    ("boolValue", lambda x, _c: bool(x)),
    ("bool_value", lambda x, _c: bool(x)),
    ("doubleValue", lambda x, _c: float(x)),
    ("double_value", lambda x, _c: float(x)),
    ("arrayValue", _json_array),
    ("array_value", _json_array),
    ("kvlistValue", _json_kvlist),
    ("kvlist_value", _json_kvlist),
    ("bytesValue", lambda x, _c: x),
    ("bytes_value", lambda x, _c: x),
)


def _json_attrs(kvs: Any, ctx: _Ctx) -> dict[str, Any]:
    if not kvs:
        return {}
    return {kv["key"]: _json_value(kv.get("value"), ctx) for kv in kvs}


def _json_enum(value: Any, names: dict[str, str], table: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and not value.isdigit():
        return names.get(value)
    i = int(value)
    return table[i] if 0 <= i < len(table) else None


def decode_json(body: bytes, limits: DecodeLimits | None = None) -> DecodedBatch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OTLPDecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OTLPDecodeError("body must be a JSON object with a resourceSpans list")
    resource_spans = _get(doc, "resourceSpans", "resource_spans") or []
    if not isinstance(resource_spans, list):
        raise OTLPDecodeError("resourceSpans must be a list")
    ctx = _Ctx(limits or DecodeLimits())
    out = DecodedBatch()
    try:
        for rs in resource_spans:
            resource = _json_attrs((rs.get("resource") or {}).get("attributes"), ctx)
            service = resource.get("service.name")
            for ss in _get(rs, "scopeSpans", "scope_spans") or []:
                scope = (ss.get("scope") or {}).get("name") or None
                for js in ss.get("spans") or []:
                    span = _json_span(js, ctx, service, scope, resource, out)
                    if span is not None:
                        out.spans.append(span)
    except (AttributeError, TypeError, KeyError) as exc:
        raise OTLPDecodeError(f"body does not have the OTLP JSON shape: {exc!r}") from exc
    out.truncated_values = ctx.truncated
    return out


def _json_span(
    js: dict[str, Any], ctx: _Ctx, service: Any, scope: str | None, resource: dict[str, Any], out: DecodedBatch
) -> Span | None:
    name = js.get("name") or "(unnamed)"
    try:
        tid = _json_id(_get(js, "traceId", "trace_id"), 16)
        sid = _json_id(_get(js, "spanId", "span_id"), 8)
        pid = _json_id(_get(js, "parentSpanId", "parent_span_id"), 8) or None
        start = _json_int(_get(js, "startTimeUnixNano", "start_time_unix_nano"))
        end = _json_int(_get(js, "endTimeUnixNano", "end_time_unix_nano"))
        reason = _check_ids(tid, sid, pid) or ctx.check_times(start, end)
        if reason:
            out.rejected.append(f"span {sid or '?'} ({name!r}): {reason}")
            return None
        status = js.get("status") or {}
        return Span(
            trace_id=tid,
            span_id=sid,
            parent_span_id=pid,
            name=name,
            start_ns=start,
            end_ns=end,
            otel_kind=_json_enum(js.get("kind"), _OTEL_KIND_NAMES, _OTEL_KINDS),
            status=_json_enum(status.get("code"), _STATUS_NAMES, _STATUS) or SpanStatus.UNSET.value,
            status_message=status.get("message") or None,
            service_name=service,
            scope_name=scope,
            attributes=_json_attrs(js.get("attributes"), ctx),
            resource=resource,
            events=[
                {
                    "name": e.get("name", ""),
                    "time_ns": _json_int(_get(e, "timeUnixNano", "time_unix_nano")),
                    "attributes": _json_attrs(e.get("attributes"), ctx),
                }
                for e in js.get("events") or []
            ],
            links=[
                {
                    "trace_id": _json_id(_get(ln, "traceId", "trace_id"), 16),
                    "span_id": _json_id(_get(ln, "spanId", "span_id"), 8),
                    "attributes": _json_attrs(ln.get("attributes"), ctx),
                }
                for ln in js.get("links") or []
            ],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        out.rejected.append(f"span ({name!r}): malformed field: {exc}")
        return None
