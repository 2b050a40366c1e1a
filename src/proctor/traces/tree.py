"""Trace trees and causal links, computed when a trace is read.

Links are derived at read time rather than at ingest so they are right whatever order spans
arrive in (a tool span often lands before the LLM span that asked for it).
"""

from __future__ import annotations

from typing import Any


def build_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans in depth-first order, children by start time, each with ``depth`` and ``child_count``.

    A span whose parent is missing from the trace (not yet arrived, or dropped upstream) is
    shown as a root with ``orphan: true`` so nothing is hidden.
    """
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_span_id")
        if parent is not None and parent not in by_id:
            s["orphan"] = True
            parent = None
        children.setdefault(parent, []).append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s["start_ns"], s["span_id"]))
    out: list[dict[str, Any]] = []
    # iterative DFS: a 20k-deep chain must not hit the recursion limit
    stack: list[tuple[dict[str, Any], int]] = [(s, 0) for s in reversed(children.get(None, []))]
    seen: set[str] = set()
    while stack:
        s, depth = stack.pop()
        if s["span_id"] in seen:  # a parent cycle in bad data
            continue
        seen.add(s["span_id"])
        kids = children.get(s["span_id"], [])
        s["depth"] = depth
        s["child_count"] = len(kids)
        out.append(s)
        stack.extend((k, depth + 1) for k in reversed(kids))
    for s in spans:  # spans only reachable through a cycle
        if s["span_id"] not in seen:
            s["depth"], s["child_count"], s["orphan"] = 0, 0, True
            out.append(s)
    return out


def causal_links(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Links between spans that the parent/child tree does not show.

    - ``tool_call``: from the LLM span that requested a tool call to the tool span that ran it,
      joined by the tool call id.
    - ``spawned_by``: from a sub-agent span to the nearest enclosing agent span.
    - ``otlp``: span links the producer sent, as they came.
    """
    links: list[dict[str, Any]] = []
    requested: dict[str, str] = {}
    # (end time, llm span id, call id, tool name) for matching tool spans that carry no call id
    offered: list[tuple[int, str, str, str | None]] = []
    for s in spans:
        for call in s.get("tool_calls") or ():
            if call.get("id"):
                requested.setdefault(call["id"], s["span_id"])
                offered.append((s["end_ns"], s["span_id"], call["id"], call.get("name")))
    offered.sort()
    claimed = {s.get("tool_call_id") for s in spans if s.get("kind") == "tool" and s.get("tool_call_id")}
    by_id = {s["span_id"]: s for s in spans}
    for s in sorted(spans, key=lambda x: x["start_ns"]):
        if s.get("kind") != "tool":
            continue
        call_id = s.get("tool_call_id")
        if call_id and call_id in requested:
            links.append({"type": "tool_call", "from": requested[call_id], "to": s["span_id"], "tool_call_id": call_id})
        elif not call_id and s.get("tool_name"):
            # Some dialects (the OpenAI Agents SDK via OpenInference) do not put the call id on
            # the tool span: take the latest earlier request for a tool of that name.
            for end_ns, llm_id, cid, name in reversed(offered):
                if end_ns <= s["start_ns"] and name == s["tool_name"] and cid not in claimed:
                    claimed.add(cid)
                    links.append({"type": "tool_call", "from": llm_id, "to": s["span_id"], "tool_call_id": cid,
                                  "matched_by": "tool_name"})
                    break
    for s in spans:
        if s.get("kind") == "agent":
            parent = by_id.get(s.get("parent_span_id") or "")
            hops = 0
            while parent is not None and hops < 10_000:
                if parent.get("kind") == "agent":
                    links.append({"type": "spawned_by", "from": s["span_id"], "to": parent["span_id"]})
                    break
                parent = by_id.get(parent.get("parent_span_id") or "")
                hops += 1
        for ln in s.get("links") or ():
            links.append(
                {"type": "otlp", "from": s["span_id"], "to": ln.get("span_id"), "trace_id": ln.get("trace_id"),
                 "attributes": ln.get("attributes") or {}}
            )
    return links
