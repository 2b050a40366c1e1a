"""Trace trees and causal links, computed when a trace is read.

Links are derived at read time rather than at ingest so they are right whatever order spans
arrive in (a tool span often lands before the LLM span that asked for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def tree_order(parents: Sequence[int]) -> tuple[list[int], list[int], list[int], bytearray]:
    """Depth-first order of a forest given as parent indices (``-1`` for a root).

    Siblings keep their order in ``parents`` (sort the input by start time first). Returns
    ``(order, depth, child_count, reached)``, the last three indexed like ``parents``;
    ``reached[i]`` is 0 for nodes only reachable through a parent cycle (bad data), which come
    last in ``order`` at depth 0. Iterative: a 20k-deep chain must not hit the recursion limit.
    """
    n = len(parents)
    children: dict[int, list[int]] = {}  # most spans are leaves: no list for them
    roots: list[int] = []
    for i, p in enumerate(parents):
        if p < 0:
            roots.append(i)
        else:
            kids = children.get(p)
            if kids is None:
                children[p] = [i]
            else:
                kids.append(i)
    order: list[int] = []
    depth = [0] * n
    reached = bytearray(n)
    stack = roots[::-1]
    append, pop, push, kids_of = order.append, stack.pop, stack.extend, children.get
    while stack:
        i = pop()
        if reached[i]:
            continue
        reached[i] = 1
        append(i)
        kids = kids_of(i)
        if kids:
            d = depth[i] + 1
            for k in kids:
                depth[k] = d
            push(kids[::-1])
    child_count = [0] * n
    for p, kids in children.items():
        child_count[p] = len(kids)
    if len(order) < n:  # nodes only reachable through a cycle
        for i in range(n):
            if not reached[i]:
                order.append(i)
                depth[i] = child_count[i] = 0
    return order, depth, child_count, reached


def build_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans in depth-first order, children by start time, each with ``depth`` and ``child_count``.

    A span whose parent is missing from the trace (not yet arrived, or dropped upstream) is
    shown as a root with ``orphan: true`` so nothing is hidden.
    """
    ordered = sorted(spans, key=lambda s: (s["start_ns"], s["span_id"]))
    index = {s["span_id"]: i for i, s in enumerate(ordered)}
    parents: list[int] = []
    for s in ordered:
        parent = s.get("parent_span_id")
        if parent is None:
            parents.append(-1)
        elif parent in index:
            parents.append(index[parent])
        else:
            s["orphan"] = True
            parents.append(-1)
    order, depth, child_count, reached = tree_order(parents)
    out: list[dict[str, Any]] = []
    for i in order:
        s = ordered[i]
        s["depth"] = depth[i]
        s["child_count"] = child_count[i]
        if not reached[i]:  # only reachable through a parent cycle
            s["orphan"] = True
        out.append(s)
    return out


def causal_links(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Links between spans that the parent/child tree does not show.

    - ``tool_call``: from the LLM span that requested a tool call to the tool span that ran it,
      joined by the tool call id.
    - ``spawned_by``: from a sub-agent span to the nearest enclosing agent span.
    - ``otlp``: span links the producer sent, as they came.
    """
    ids = [s["span_id"] for s in spans]
    index = {sid: i for i, sid in enumerate(ids)}
    links = link_indexes(
        [index.get(s.get("parent_span_id") or "", -1) for s in spans],
        [s.get("kind") for s in spans],
        [s["start_ns"] for s in spans],
        [s.get("end_ns", s["start_ns"]) for s in spans],
        [s.get("tool_name") for s in spans],
        [s.get("tool_call_id") for s in spans],
        [s.get("tool_calls") for s in spans],
        [s.get("links") for s in spans],
    )
    for ln in links:
        ln["from"] = ids[ln["from"]]
        if ln["type"] != "otlp":
            ln["to"] = ids[ln["to"]]
    return links


def link_indexes(
    parent: Sequence[int], kind: Sequence[str | None], start_ns: Sequence[int], end_ns: Sequence[int],
    tool_name: Sequence[str | None], tool_call_id: Sequence[str | None],
    tool_calls: Sequence[list[dict[str, Any]] | None], otlp_links: Sequence[list[dict[str, Any]] | None],
) -> list[dict[str, Any]]:
    """:func:`causal_links` over spans given as columns, span ``i`` being index ``i`` of each.

    ``from`` and ``to`` are indexes, except the ``to`` of an ``otlp`` link, which is the span id
    the producer sent (it may be in another trace). The console's trace view uses this directly:
    a 20,000-span trace is not turned into dicts just to be linked.
    """
    links: list[dict[str, Any]] = []
    requested: dict[str, int] = {}  # call id -> the first span that asked for it
    for i, calls in enumerate(tool_calls):
        if calls:
            for call in calls:
                cid = call.get("id")
                if cid and cid not in requested:
                    requested[cid] = i
    # (end time, llm span index, call id, tool name) for matching tool spans that carry no call id;
    # built the first time one needs it (most dialects put the call id on the tool span)
    offered: list[tuple[int, int, str, str | None]] | None = None
    tools = [i for i, k in enumerate(kind) if k == "tool"]
    claimed = {tool_call_id[i] for i in tools if tool_call_id[i]}
    tools.sort(key=start_ns.__getitem__)
    append = links.append
    for i in tools:
        call_id = tool_call_id[i]
        if call_id:
            if call_id in requested:
                append({"type": "tool_call", "from": requested[call_id], "to": i, "tool_call_id": call_id})
        elif tool_name[i]:
            # Some dialects (the OpenAI Agents SDK via OpenInference) do not put the call id on
            # the tool span: take the latest earlier request for a tool of that name.
            if offered is None:
                offered = sorted((end_ns[j], j, call["id"], call.get("name"))
                                 for j, calls in enumerate(tool_calls) if calls for call in calls if call.get("id"))
            for end, llm, cid, name in reversed(offered):
                if end <= start_ns[i] and name == tool_name[i] and cid not in claimed:
                    claimed.add(cid)
                    append({"type": "tool_call", "from": llm, "to": i, "tool_call_id": cid,
                            "matched_by": "tool_name"})
                    break
    for i, (k, lns) in enumerate(zip(kind, otlp_links, strict=True)):
        if k == "agent":
            p = parent[i]
            hops = 0
            while p >= 0 and hops < 10_000:
                if kind[p] == "agent":
                    links.append({"type": "spawned_by", "from": i, "to": p})
                    break
                p = parent[p]
                hops += 1
        for ln in lns or ():
            links.append({"type": "otlp", "from": i, "to": ln.get("span_id"), "trace_id": ln.get("trace_id"),
                          "attributes": ln.get("attributes") or {}})
    return links
