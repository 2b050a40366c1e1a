"""Sessions (conversations): ``/sessions``, and ``/sessions/{session_id}`` — one conversation across
its traces, with the guard's decisions and the approvals it asked for, and a way to stop it.

The list and the detail are ``proctor.traces.session_list`` and ``session_detail`` (what
``/api/sessions`` returns); the filters are the API's (since, until, agent, status, q).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select

from proctor import traces as views
from proctor.server.api import filters_from_query
from proctor.store import CursorError
from proctor.store.decisions import DecisionLog
from proctor.store.killswitches import KillSwitches
from proctor.store.schema import approvals as approvals_t
from proctor.ui.pages.traces import (
    DEFAULT_LIMIT,
    PAGE_SIZES,
    QUICK_SINCE,
    FilterErrors,
    check_common,
    filter_options,
    is_json,
    parse_limit,
    read_params,
    span_store,
)
from proctor.ui.render import page, principal_of

router = APIRouter(tags=["console"])

SESSION_PARAMS = ("since", "until", "agent", "status", "q")
DECISIONS_SHOWN = 200  # the newest; the decision log page has them all (/decisions?session=...)
APPROVALS_SHOWN = 50


@page(router, "/sessions", "sessions.html")
def sessions(request: Request) -> dict[str, Any]:
    p = read_params(request, SESSION_PARAMS)
    errors = FilterErrors()
    limit = parse_limit(request.query_params.get("limit"), errors)
    cursor = request.query_params.get("cursor") or None
    check_common(p, errors)
    rows: list[dict[str, Any]] = []
    next_cursor = None
    if not errors:
        flt = filters_from_query(p["since"] or None, p["until"] or None, p["agent"] or None, None, p["status"] or None,
                       None, None, None, None, None, None, p["q"] or None)
        try:
            listed = views.session_list(span_store(request), flt, limit=limit, cursor=cursor)
        except CursorError as exc:
            errors["cursor"] = str(exc)
        else:
            rows, next_cursor = listed["sessions"], listed["next_cursor"]
    if errors and is_json(request):
        raise HTTPException(400, errors.summary())
    agents = filter_options(request)["agents"]
    return {
        "active": "sessions",
        "filters": p,
        "limit": limit,
        "errors": dict(errors),
        "sessions": rows,
        "next_cursor": next_cursor,
        "filtered": any(p.values()),
        "options": {"agents": agents if not p["agent"] or p["agent"] in agents else [p["agent"], *agents]},
        "quick_since": QUICK_SINCE,
        "page_sizes": PAGE_SIZES,
        "default_limit": DEFAULT_LIMIT,
    }


def _approvals(request: Request, session_id: str) -> list[dict[str, Any]]:
    """The approvals this session asked for, newest first (ApprovalStore lists by status only;
    approvals are few, so a scan of the table by session is cheap)."""
    a = approvals_t.c
    now = time.time_ns()
    with request.app.state.proctor.engine.connect() as conn:
        rows = conn.execute(
            select(a.id, a.tool, a.status, a.rule_id, a.message, a.requested_ns, a.expires_ns, a.decided_ns,
                   a.decided_by, a.decision_reason, a.trace_id, a.span_id)
            .where(a.session_id == session_id).order_by(a.requested_ns.desc()).limit(APPROVALS_SHOWN)
        ).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        if d["status"] == "pending" and d["expires_ns"] <= now:
            d["status"] = "expired"  # as ApprovalStore reports it
        out.append(d)
    return out


@page(router, "/sessions/{session_id:path}", "session.html")
def session(request: Request, session_id: str) -> dict[str, Any]:
    state = request.app.state.proctor
    try:
        detail = views.session_detail(span_store(request), session_id)
    except views.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    traces = detail["traces"]
    start = min(t["start_ns"] for t in traces)
    end = max(t["end_ns"] for t in traces)
    decisions = DecisionLog(state.engine).list(session_id=session_id, limit=DECISIONS_SHOWN + 1)
    more_decisions = len(decisions) > DECISIONS_SHOWN
    decisions = decisions[:DECISIONS_SHOWN][::-1]  # in the order they were made, as the traces
    effects: dict[str, int] = {}
    for d in decisions:
        effects[d["effect"]] = effects.get(d["effect"], 0) + 1
    switch = KillSwitches(state.engine).active().get(f"session:{session_id}")
    agents = sorted({t["agent_name"] for t in traces if t["agent_name"]})
    return {
        "active": "sessions",
        **detail,
        "agents": agents,
        "user_id": next((t["user_id"] for t in traces if t.get("user_id")), None),
        "start_ns": start,
        "end_ns": end,
        "duration_ms": (end - start) / 1e6,
        "span_count": sum(t["span_count"] for t in traces),
        "error_traces": sum(1 for t in traces if t["error_count"]),
        "decisions": decisions,
        "more_decisions": more_decisions,
        "decision_effects": effects,
        "approvals": _approvals(request, session_id),
        "kill_switch": switch.to_dict() if switch is not None else None,
        "can_stop": principal_of(request).can("operate"),
    }
