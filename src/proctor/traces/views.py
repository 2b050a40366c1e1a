"""The JSON shapes of traces, spans, sessions and statistics.

The REST API returns these dicts and the CLI prints them (``--json``) or renders them, so a
trace looks the same however it is reached.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import case, func, select

from proctor.core.timeparse import format_ns
from proctor.store import SpanStore, TraceFilter
from proctor.traces.tree import build_tree, causal_links, link_indexes, tree_order


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


def trace_summary(store: SpanStore, trace_id: str) -> dict[str, Any]:
    """The trace's list item (totals, root, agent) without its spans."""
    trace_id = resolve_trace_id(store, trace_id)
    summary = store.get_trace_summary(trace_id)
    if summary is None:
        raise NotFound(f"no trace {trace_id}")
    return _trace_item(summary)


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


# --- the console's trace view ----------------------------------------------------------------------
# A trace of 20,000 spans as one dict per span with every column is ~16 MB of JSON and seconds of
# work in a browser. The trace view needs a few fields per span to draw rows and bars; the rest
# (attributes, messages, events) is fetched for one span when it is inspected.

#: columns the outline reads, in this order
_OUTLINE_COLUMNS = (
    "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status", "agent_name", "model",
    "tool_name", "tool_call_id", "tool_calls", "links",
)
_MODEL_KINDS = frozenset({"llm", "embedding"})


def decision_events(events: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``proctor.decision`` events of a span (see guard/recording.py) as decision dicts."""
    out = []
    for ev in events or ():
        if ev.get("name") != "proctor.decision":
            continue
        a = ev.get("attributes") or {}
        reasons = a.get("proctor.decision.reasons") or []
        out.append({
            "decision_id": a.get("proctor.decision.id"),
            "ts_ns": ev.get("time_ns"),
            "effect": a.get("proctor.decision.effect") or "allow",
            "rule_id": a.get("proctor.decision.rule_id"),
            "rule_kind": a.get("proctor.decision.rule_kind"),
            "action": a.get("proctor.decision.stage"),
            "target": a.get("proctor.decision.target"),
            "reasons": [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)],
            "enforced": True,
            "shadow_effect": a.get("proctor.decision.shadow_effect"),
            "approval_id": a.get("proctor.approval.id"),
            "policy_hash": a.get("proctor.decision.policy_hash"),
            "seq": None,
            "on_span": True,
            "in_log": False,
        })
    return out


def decision_reason(d: dict[str, Any]) -> str:
    """The deciding rule's reason, without the "rule: effect — " its text starts with."""
    reasons = [str(r) for r in d.get("reasons") or ()]
    rule = d.get("rule_id") or "default"
    for r in reasons:
        text = r.removeprefix("[shadow] ")
        if text.startswith(rule + ":"):
            head, sep, tail = text.partition(" — ")
            return tail if sep else head
    return reasons[0] if reasons else ""


def _log_decisions(store: SpanStore, trace_id: str, span_id: str | None = None) -> list[dict[str, Any]]:
    """Decision-log rows of a trace (or of one span of it), oldest first."""
    from proctor.store.decisions import DecisionLog

    return [{
        "decision_id": r["decision_id"], "ts_ns": r["ts_ns"], "span_id": r["span_id"], "effect": r["effect"],
        "rule_id": r["rule_id"], "rule_kind": r["rule_kind"], "action": r["action"], "target": r["target"],
        "reasons": r["reasons"], "enforced": r["enforced"], "shadow_effect": None, "approval_id": None,
        "policy_hash": r["policy_hash"], "seq": r["seq"], "on_span": False, "in_log": True,
    } for r in DecisionLog(store.engine).for_trace(trace_id, span_id)]


def merge_decisions(on_span: list[dict[str, Any]], logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One list from a span's decision events and the decision log's rows, joined by decision id:
    a decision recorded both ways appears once, with its log seq; shadow rows stay separate."""
    by_id: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for d in on_span:
        out.append(d)
        if d.get("decision_id"):
            by_id[d["decision_id"]] = d
    for row in logged:
        known = by_id.get(row["decision_id"])
        if known is not None:
            known["seq"], known["in_log"] = row["seq"], True
            known["rule_kind"] = known.get("rule_kind") or row.get("rule_kind")
        else:
            out.append(row)
    out.sort(key=lambda d: (d.get("ts_ns") or 0, d.get("seq") or 0))
    return out


def span_decisions(store: SpanStore, trace_id: str, span: dict[str, Any]) -> list[dict[str, Any]]:
    """Every decision about ``span``: its ``proctor.decision`` events and its decision-log rows."""
    logged = _log_decisions(store, trace_id, span["span_id"])
    for row in logged:
        row.pop("span_id", None)
    return merge_decisions(decision_events(span.get("events")), logged)


def outline_version(store: SpanStore, trace_id: str) -> tuple[str, int, int, int]:
    """What :func:`trace_outline` depends on: (trace id, last update, span count, last decision-log seq).
    Equal versions give equal outlines, so a caller may keep one."""
    from proctor.store.schema import decisions as decisions_t
    from proctor.store.schema import traces as traces_t

    trace_id = resolve_trace_id(store, trace_id)
    with store.engine.connect() as conn:
        row = conn.execute(select(traces_t.c.updated_ns, traces_t.c.span_count)
                           .where(traces_t.c.trace_id == trace_id)).first()
        seq = conn.execute(select(func.max(decisions_t.c.seq)).where(decisions_t.c.trace_id == trace_id)).scalar()
    if row is None:
        raise NotFound(f"no trace {trace_id}")
    return trace_id, int(row.updated_ns), int(row.span_count), int(seq or 0)


def trace_outline(store: SpanStore, trace_id: str) -> dict[str, Any]:
    """A trace for the console's trace view: its spans as columns, in tree order.

    ``columns`` holds one list per field, index ``i`` being the ``i``-th span in depth-first
    order: ``id``, ``parent`` (index, -1 for a root), ``depth``, ``name``/``kind``/``agent``/
    ``model``/``tool`` (indexes into ``strings``, -1 for none), ``start``/``dur`` (µs from the
    trace's start), ``err`` (1 for a failed span) and ``node`` (index into ``graph.nodes``). ``errors`` maps a failed span's index to its message; ``decisions``
    lists the policy decisions other than allow (span events and decision-log rows, joined by
    decision id); ``links`` are :func:`causal_links` by index; ``graph`` is the agents, tools and
    models of the trace with call counts. Attributes, messages and events are left out: the
    inspector reads them one span at a time.
    """
    from proctor.store.schema import spans as spans_t

    trace_id = resolve_trace_id(store, trace_id)
    summary = store.get_trace_summary(trace_id)
    if summary is None:
        raise NotFound(f"no trace {trace_id}")
    c = spans_t.c
    # every column read costs: the error text is one column, NULL on spans that did not fail
    error_text = case((c.status == "error", func.coalesce(c.error_message, c.status_message, c.error_type, "error")))
    # unordered: SQLite would sort the wide rows in a temporary b-tree; Python sorts the tuples faster
    # the events of spans that carry decisions: in the same pass, where a second query would
    # read every row again
    decision_events_json = case((c.events.like("%proctor.decision%"), c.events))
    q = select(*[c[name] for name in _OUTLINE_COLUMNS], error_text, decision_events_json).where(
        c.trace_id == trace_id)
    with store.engine.connect() as conn:
        rows = _fetch_tuples(conn, q)
    n = len(rows)
    # siblings by start time, then span id, as build_tree orders them: two stable sorts on plain keys
    # beat one on tuples, and the first is nearly free (SQLite returns the rows in primary-key order)
    rows.sort(key=itemgetter(0))
    rows.sort(key=itemgetter(4))
    get = {r[0]: i for i, r in enumerate(rows)}.get
    parents_raw = [get(r[1], -1) for r in rows]  # a missing parent (or None) makes a root
    order, depth_raw, _kids, reached = tree_order(parents_raw)
    pos = [0] * n  # sorted row -> position in tree order
    for p, i in enumerate(order):
        pos[i] = p
    # a parent always comes before its children; spans only reachable through a cycle are roots
    parent = [pos[parents_raw[i]] if parents_raw[i] >= 0 and reached[i] else -1 for i in order]
    depth = [depth_raw[i] for i in order]
    rows = [rows[i] for i in order]
    (span_id, _parent_id, name_c, kind_c, start_c, end_c, status_c, agent_c, model_c, tool_c, call_id_c,
     calls_c, links_c, error_c, events_c) = (list(col) for col in zip(*rows, strict=True)) if rows else (
        [] for _ in range(len(_OUTLINE_COLUMNS) + 2))
    at = {sid: i for i, sid in enumerate(span_id)}  # span id -> position

    # one table for the repeated strings (names, kinds, agents, models, tools); -1 for none
    sx: dict[str | None, int] = dict.fromkeys(chain(name_c, kind_c, agent_c, model_c, tool_c), -1)
    sx.pop(None, None)
    sx.pop("", None)
    strings: list[str] = [v for v in sx if v]
    sx.update((v, k) for k, v in enumerate(strings))
    sx[None] = sx[""] = -1
    look = sx.__getitem__
    kind, name = list(map(look, kind_c)), list(map(look, name_c))
    agent, model, tool = list(map(look, agent_c)), list(map(look, model_c)), list(map(look, tool_c))
    err = [1 if st == "error" else 0 for st in status_c]
    errors = {p: error_c[p] or "error" for p in range(n) if err[p]}

    links = link_indexes(parent, kind_c, start_c, end_c, tool_c, call_id_c,
                         _parse_some(calls_c), _parse_some([c if c != "[]" else None for c in links_c]))
    for ln in links:
        if ln["type"] == "otlp":  # the target may be in this trace, or elsewhere
            dst = at.get(ln["to"] or "")
            ln["span_id"], ln["to"] = ln["to"], (dst if dst is not None else -1)
    decision_rows = [(span_id[p], ev) for p, ev in enumerate(events_c) if ev]
    decisions = _outline_decisions(store, trace_id, decision_rows, at, n)
    graph, node = _trace_graph(parent, kind, name, agent, model, tool, err, strings)
    t0 = min(start_c, default=summary["start_ns"])
    return {
        "trace": _trace_item(summary),
        "span_count": n,
        "t0_ns": t0,
        "duration_us": (max(end_c) - t0) // 1000 if n else 0,
        "strings": strings,
        "columns": {"id": span_id, "parent": parent, "depth": depth, "name": name, "kind": kind,
                    "start": [(v - t0) // 1000 for v in start_c],
                    "dur": [max(0, e - s) // 1000 for s, e in zip(start_c, end_c, strict=True)],
                    "err": err, "agent": agent, "model": model, "tool": tool, "node": node},
        "errors": errors,
        "decisions": decisions["items"],
        "decision_count": decisions["count"],
        "links": links,
        "graph": graph,
    }


def _parse_some(texts: list[str | None]) -> list[Any]:
    """JSON texts parsed (None stays None), in one orjson call: one per span costs more."""
    present = [t for t in texts if t]
    if not present:
        return [None] * len(texts)
    try:
        values = orjson.loads("[" + ",".join(present) + "]")
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != len(present):  # a bad one: parse each, keep the good
        values = [_loads_or_none(t) for t in present]
    parsed = iter(values)
    return [next(parsed) if t else None for t in texts]


def _loads_or_none(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _fetch_tuples(conn: Any, query: Any) -> list[tuple[Any, ...]]:
    """All rows of ``query`` as plain tuples from the DB-API cursor: a SQLAlchemy Row per span
    costs a third of the outline's time on a 20,000-span trace."""
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    if compiled.positional:
        args: Any = tuple(params[k] for k in compiled.positiontup)
    else:
        args = params
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(str(compiled), args)
        return cur.fetchall()
    finally:
        cur.close()


def _outline_decisions(store: SpanStore, trace_id: str, decision_rows: list[Any], at: dict[str, int],
                       n: int) -> dict[str, Any]:
    """Decisions other than allow, by tree position; decisions not tied to a span (an alert's
    containment) are put on the root."""
    by_span: dict[str | None, list[dict[str, Any]]] = {}
    for span_id, events_json in decision_rows:
        try:
            events = orjson.loads(events_json)
        except orjson.JSONDecodeError:
            continue
        if isinstance(events, list):
            by_span.setdefault(span_id, []).extend(decision_events(events))
    for row in _log_decisions(store, trace_id):
        by_span.setdefault(row.pop("span_id") if row.get("span_id") in at else None, []).append(row)
    events_only = {k: [d for d in v if d["on_span"]] for k, v in by_span.items()}
    count = 0
    items: list[dict[str, Any]] = []
    for span_id, ds in by_span.items():
        merged = merge_decisions(events_only[span_id], [d for d in ds if not d["on_span"]])
        count += len(merged)
        p = at[span_id] if span_id is not None else (0 if n else -1)
        for d in merged:
            if d["effect"] == "allow" and not d.get("shadow_effect"):
                continue
            items.append({"span": p, "trace_level": span_id is None, "effect": d["effect"],
                          "enforced": d["enforced"], "rule_id": d["rule_id"], "rule_kind": d["rule_kind"],
                          "action": d["action"], "target": d["target"], "reason": decision_reason(d),
                          "shadow_effect": d.get("shadow_effect"), "decision_id": d["decision_id"],
                          "seq": d["seq"]})
    items.sort(key=lambda d: (d["span"], d["seq"] or 0))
    return {"items": items, "count": count}


def _trace_graph(parent: list[int], kind: list[int], name: list[int], agent: list[int], model: list[int],
                 tool: list[int], err: list[int], strings: list[str]) -> tuple[dict[str, Any], list[int]]:
    """Agents, tools and models of a trace as nodes; who called what, with counts, as edges.

    An edge goes from the nearest enclosing agent span to each tool span, model call and
    sub-agent below it. Returns the graph and each span's node (-1 for spans that are none).
    """
    nodes: list[dict[str, Any]] = []
    # node index by string index, one table per node type (a hot loop: no tuples, no calls)
    by_type: dict[str, dict[int, int]] = {"agent": {}, "tool": {}, "model": {}}
    agent_labels: dict[str, int] = {}
    counts: list[int] = []
    errors: list[int] = []
    edges: dict[int, list[int]] = {}  # above * 2**20 + node -> [count, errors]
    n = len(parent)
    agent_node = [-1] * n  # the nearest agent at or above each span
    span_node = [-1] * n
    kinds = {k: strings[k] for k in set(kind) if k >= 0}
    agent_t, tool_t, model_t = by_type["agent"], by_type["tool"], by_type["model"]

    def new_node(ntype: str, label: str) -> int:
        nodes.append({"id": f"{ntype}:{label}", "type": ntype, "label": label, "spans": 0, "errors": 0})
        counts.append(0)
        errors.append(0)
        return len(nodes) - 1

    for i, p in enumerate(parent):  # tree order: a parent comes before its children
        above = agent_node[p] if p >= 0 else -1
        k_kind = kinds.get(kind[i], "other")
        if k_kind == "agent":
            ix = agent[i]
            k = agent_t.get(ix, -1) if ix >= 0 else -1
            if k < 0:  # by label: an agent span without gen_ai.agent.name is known by its span name
                label = strings[ix] if ix >= 0 else strings[name[i]].removeprefix("invoke_agent ")
                k = agent_labels.get(label, -1)
                if k < 0:
                    k = agent_labels[label] = new_node("agent", label)
                if ix >= 0:
                    agent_t[ix] = k
            agent_node[i] = k
        else:
            agent_node[i] = above
            if k_kind == "tool" and tool[i] >= 0:
                k = tool_t.get(tool[i], -1)
                if k < 0:
                    k = tool_t[tool[i]] = new_node("tool", strings[tool[i]])
            elif k_kind in _MODEL_KINDS and model[i] >= 0:
                k = model_t.get(model[i], -1)
                if k < 0:
                    k = model_t[model[i]] = new_node("model", strings[model[i]])
            else:
                continue
        span_node[i] = k
        failed = err[i]
        counts[k] += 1
        errors[k] += failed
        if above >= 0 and above != k:
            e = edges.get(above * 1048576 + k)
            if e is None:
                edges[above * 1048576 + k] = [1, failed]
            else:
                e[0] += 1
                e[1] += failed
    for k, node in enumerate(nodes):
        node["spans"], node["errors"] = counts[k], errors[k]
    return {"nodes": nodes, "edges": [{"from": key >> 20, "to": key & 1048575, "count": c, "errors": f}
                                      for key, (c, f) in edges.items()]}, span_node
