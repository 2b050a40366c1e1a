"""The JSON shapes of traces, spans, sessions and statistics.

The REST API returns these dicts and the CLI prints them (``--json``) or renders them, so a
trace looks the same however it is reached.
"""

from __future__ import annotations

from typing import Any

from proctor.core.timeparse import format_ns
from proctor.store import SpanStore, TraceFilter
from proctor.traces.tree import build_tree, causal_links


class NotFound(LookupError):
    pass


class Ambiguous(LookupError):
    pass


def _trace_item(row: dict[str, Any]) -> dict[str, Any]:
    row["start_time"] = format_ns(row["start_ns"])
    row["duration_ms"] = row["duration_ns"] / 1e6
    row["status"] = "error" if row["error_count"] else "ok"
    return row


def _span_item(row: dict[str, Any]) -> dict[str, Any]:
    row["start_time"] = format_ns(row["start_ns"])
    row["duration_ms"] = row["duration_ns"] / 1e6
    return row


def trace_list(store: SpanStore, flt: TraceFilter, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    page = store.list_traces(flt, limit=limit, cursor=cursor)
    return {"traces": [_trace_item(r) for r in page.items], "next_cursor": page.next_cursor}


def resolve_trace_id(store: SpanStore, trace_id: str) -> str:
    """Accept a full trace id or a unique prefix of one (as the CLI prints short ids)."""
    trace_id = trace_id.strip().lower()
    if len(trace_id) == 32:
        return trace_id
    if len(trace_id) < 4:
        raise NotFound(f"trace id prefix {trace_id!r} is too short: give at least 4 characters")
    matches = store.find_trace_prefix(trace_id)
    if not matches:
        raise NotFound(f"no trace with id starting {trace_id!r}")
    if len(matches) > 1:
        raise Ambiguous(f"trace id prefix {trace_id!r} matches several traces: {', '.join(matches)}")
    return matches[0]


def trace_detail(store: SpanStore, trace_id: str) -> dict[str, Any]:
    trace_id = resolve_trace_id(store, trace_id)
    summary = store.get_trace_summary(trace_id)
    if summary is None:
        raise NotFound(f"no trace {trace_id}")
    spans = [_span_item(s) for s in store.trace_spans(trace_id)]
    ordered = build_tree(spans)
    return {"trace": _trace_item(summary), "spans": ordered, "links": causal_links(ordered)}


def span_detail(store: SpanStore, span_id: str, trace_id: str | None = None) -> dict[str, Any]:
    span_id = span_id.strip().lower()
    if len(span_id) != 16:
        matches = store.find_span_prefix(span_id) if len(span_id) >= 4 else []
        if not matches:
            raise NotFound(f"no span with id starting {span_id!r}")
        if len(matches) > 1:
            raise Ambiguous(f"span id prefix {span_id!r} matches several spans")
        trace_id, span_id = matches[0]
    row = store.get_span(span_id, trace_id)
    if row is None:
        raise NotFound(f"no span {span_id}")
    return _span_item(row)


def session_list(store: SpanStore, flt: TraceFilter, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    page = store.list_sessions(flt, limit=limit, cursor=cursor)
    for r in page.items:
        r["start_time"] = format_ns(r["start_ns"])
        r["duration_ms"] = (r["end_ns"] - r["start_ns"]) / 1e6
    return {"sessions": page.items, "next_cursor": page.next_cursor}


def session_detail(store: SpanStore, session_id: str) -> dict[str, Any]:
    traces = [_trace_item(t) for t in store.session_traces(session_id)]
    if not traces:
        raise NotFound(f"no session {session_id!r}")
    return {
        "session_id": session_id,
        "trace_count": len(traces),
        "start_time": traces[0]["start_time"],
        "cost_usd": sum(t["cost_usd"] for t in traces),
        "input_tokens": sum(t["input_tokens"] for t in traces),
        "output_tokens": sum(t["output_tokens"] for t in traces),
        "error_count": sum(t["error_count"] for t in traces),
        "traces": traces,
    }


def stats(store: SpanStore, flt: TraceFilter) -> dict[str, Any]:
    return store.stats(flt)
