"""The trace view: one trace as a tree beside a waterfall, a span inspector, and a graph.

Four routes:

* ``/traces/{id}``                     — the page: a shell with the trace's summary, rendered at once;
* ``/traces/{id}.json``                — its JSON twin and the page's data: the trace as columns
  (:func:`proctor.traces.views.trace_outline`), which static/js/trace.js draws, a screenful of
  rows at a time;
* ``/traces/{id}/spans/{span}``        — the inspector for one span (an HTML fragment for the page;
  a browser that opens it directly is sent to ``/traces/{id}?span={span}``, the span's deep link);
* ``/traces/{id}/spans/{span}.json``   — the same span as JSON: fields, attributes, events,
  messages and its policy decisions (span events joined with decision-log rows).

``{id}`` is a full trace id or a unique prefix of one; the page redirects a prefix to the full id.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from proctor.store import SpanStore
from proctor.traces import views
from proctor.ui.render import json_response, render, wants_json

router = APIRouter(tags=["console"])

#: header the page's script sends to get the inspector as a fragment instead of a redirect
FRAGMENT_HEADER = "x-proctor-fragment"


def _store(request: Request) -> SpanStore:
    return request.app.state.proctor.store


def _lookup(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except views.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except views.Ambiguous as exc:
        raise HTTPException(409, str(exc)) from exc


class OutlineCache:
    """The serialized outlines of the traces viewed last, up to ``max_bytes``.

    Keyed by :func:`proctor.traces.views.outline_version` (last update, span count, last decision
    seq), so a trace that changed is computed again. Opening a trace a second time (a reload, a
    shared deep link, the back button) then costs two indexed lookups instead of reading every span.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int, int]) -> bytes | None:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: tuple[str, int, int, int], body: bytes) -> None:
        if len(body) > self.max_bytes // 2:
            return
        with self._lock:
            for old in [k for k in self._items if k[0] == key[0]]:  # an older version of this trace
                self._size -= len(self._items.pop(old))
            self._items[key] = body
            self._size += len(body)
            while self._size > self.max_bytes and self._items:
                self._size -= len(self._items.popitem(last=False)[1])


_outlines = OutlineCache()


def outline_body(request: Request, trace_id: str) -> tuple[bytes, bool]:
    """The outline as JSON bytes, and whether it came from the cache (the trace has not changed since)."""
    store = _store(request)
    version = _lookup(views.outline_version, store, trace_id)
    body = _outlines.get(version)
    if body is not None:
        return body, True
    doc = _lookup(views.trace_outline, store, version[0])
    doc["active"] = "traces"
    body = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS, default=str)
    _outlines.put(version, body)
    return body, False


@router.get("/traces/{trace_id}.json", include_in_schema=False)
def trace_json(request: Request, trace_id: str) -> Response:
    """The trace as the page draws it: summary, span columns in tree order, decisions, links, graph."""
    started = time.perf_counter()
    body, kept = outline_body(request, trace_id)
    # Server-Timing: browsers show it in their developer tools; benchmarks/console.py reads it
    timing = f'outline;dur={(time.perf_counter() - started) * 1000:.1f};desc="{"kept" if kept else "computed"}"'
    return Response(body, media_type="application/json", headers={"server-timing": timing})


@router.get("/traces/{trace_id}", include_in_schema=False)
def trace_page(request: Request, trace_id: str, span: str | None = None) -> Response:
    if wants_json(request):
        return trace_json(request, trace_id)
    store = _store(request)
    full = _lookup(views.resolve_trace_id, store, trace_id)
    if full != trace_id:  # a prefix, or upper case: the page lives at the canonical id
        query = ("?" + request.url.query) if request.url.query else ""
        return RedirectResponse(f"/traces/{full}{query}", status_code=302)
    trace = _lookup(views.trace_summary, store, full)
    ctx = {
        "active": "traces",
        "trace": trace,
        "selected": span or "",
        "data_url": f"/traces/{full}.json",
    }
    return render(request, "trace.html", ctx)


# --- the span inspector ---------------------------------------------------------------------------
def span_context(request: Request, trace_id: str, span_id: str) -> dict[str, Any]:
    """Everything the inspector shows about one span."""
    store = _store(request)
    full = _lookup(views.resolve_trace_id, store, trace_id)
    span = _lookup(views.span_detail, store, span_id, full)
    if span["trace_id"] != full:
        raise HTTPException(404, f"span {span_id} is not in trace {full}")
    summary = store.get_trace_summary(full)
    t0 = summary["start_ns"] if summary else span["start_ns"]
    attributes = span.get("attributes") or {}
    decisions = views.span_decisions(store, full, span)
    events = [ev for ev in span.get("events") or () if ev.get("name") != "proctor.decision"]
    for ev in events:
        ev["offset_ms"] = ((ev.get("time_ns") or t0) - t0) / 1e6
    system = attributes.get("gen_ai.system_instructions")
    return {
        "active": "traces",
        "trace_id": full,
        "span": span,
        "offset_ms": (span["start_ns"] - t0) / 1e6,
        "decisions": decisions,
        "events": events,
        "messages": {
            "system": chat_messages(system) if system else None,
            "input": chat_messages(span.get("input_value")),
            "output": chat_messages(span.get("output_value")),
        },
        "attributes": sorted(attributes.items()),
        "resource": sorted((span.get("resource") or {}).items()),
        "deep_link": f"/traces/{full}?span={span['span_id']}",
    }


@router.get("/traces/{trace_id}/spans/{span_id}.json", include_in_schema=False)
def span_json(request: Request, trace_id: str, span_id: str) -> Response:
    ctx = span_context(request, trace_id, span_id)
    ctx["attributes"] = dict(ctx["attributes"])
    ctx["resource"] = dict(ctx["resource"])
    return json_response(ctx)


@router.get("/traces/{trace_id}/spans/{span_id}", include_in_schema=False)
def span_fragment(request: Request, trace_id: str, span_id: str) -> Response:
    if wants_json(request):
        return span_json(request, trace_id, span_id)
    if FRAGMENT_HEADER not in request.headers:
        # a person followed a link: show the span in its trace
        return RedirectResponse(f"/traces/{quote(trace_id)}?span={quote(span_id)}", status_code=302)
    return render(request, "_span.html", span_context(request, trace_id, span_id))


# --- messages ---------------------------------------------------------------------------------------
def chat_messages(value: Any) -> list[dict[str, Any]] | None:
    """Model input or output as a list of ``{role, parts, finish_reason}`` for display.

    Reads OTel GenAI messages (``parts`` of text / tool_call / tool_call_response), OpenAI-style
    messages (``content`` and ``tool_calls``) and plain text; anything else is shown as JSON.
    """
    if value is None or value == "":
        return None
    doc = value
    if isinstance(value, str):
        try:
            doc = json.loads(value)
        except ValueError:
            return [{"role": None, "parts": [{"type": "text", "content": value}], "finish_reason": None}]
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        doc = doc["messages"]
    if isinstance(doc, str):
        return [{"role": None, "parts": [{"type": "text", "content": doc}], "finish_reason": None}]
    if not isinstance(doc, list):
        return [{"role": None, "parts": [{"type": "json", "content": doc}], "finish_reason": None}]
    out = []
    for m in doc:
        if not isinstance(m, dict):
            out.append({"role": None, "parts": [_part(m)], "finish_reason": None})
            continue
        raw_parts = m.get("parts")
        if not isinstance(raw_parts, list):
            content = m.get("content")
            raw_parts = [] if content is None else (content if isinstance(content, list) else [content])
            for tc in m.get("tool_calls") or ():
                if isinstance(tc, dict):
                    fn = tc["function"] if isinstance(tc.get("function"), dict) else {}
                    raw_parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name") or tc.get("name"),
                                      "arguments": fn.get("arguments", tc.get("arguments"))})
            if m.get("tool_call_id"):  # an OpenAI tool message: its content is the result
                raw_parts = [{"type": "tool_call_response", "id": m["tool_call_id"],
                              "response": m.get("content")}]
        out.append({"role": m.get("role"), "parts": [_part(p) for p in raw_parts],
                    "finish_reason": m.get("finish_reason")})
    return out


def _part(p: Any) -> dict[str, Any]:
    if isinstance(p, str):
        return {"type": "text", "content": p}
    if not isinstance(p, dict):
        return {"type": "json", "content": p}
    kind = p.get("type")
    if kind == "text" or (kind is None and isinstance(p.get("content"), str)):
        return {"type": "text", "content": p.get("content") if p.get("content") is not None else p.get("text", "")}
    if kind in ("tool_call", "function_call"):
        return {"type": "tool_call", "id": p.get("id"), "name": p.get("name"), "arguments": p.get("arguments")}
    if kind in ("tool_call_response", "tool_result", "function_call_output"):
        return {"type": "tool_call_response", "id": p.get("id") or p.get("call_id"),
                "response": p.get("response", p.get("result", p.get("output")))}
    if isinstance(p.get("text"), str):
        return {"type": "text", "content": p["text"]}
    return {"type": "json", "content": p}
