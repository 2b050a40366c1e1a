"""The alerts pages of the console: alerts, one alert and what fired it, silences.

* ``GET /alerts``                       — alerts newest first; filters: state (open, pending, firing,
  resolved), rule, severity;
* ``GET /alerts/{id}``                  — one alert: summary, labels, its events (transitions,
  notifications and their outcomes, containment actions), its rule, and the spans and decisions
  behind it, each linking to its place in the trace;
* ``GET /alerts/silences``              — silences, active and expired, and a form to add one;
* ``POST /alerts/silences``             — add one (fields ``matchers`` "rule=cost-* agent=support",
  ``duration`` "2h", ``reason``); ``operate`` permission;
* ``POST /alerts/silences/{id}/revoke`` — revoke one (field ``reason`` optional); ``operate``.

Everything is read from and written to :class:`proctor.store.alerts.AlertStore` through the
server's :class:`~proctor.telemetry.service.AlertService`, as ``/api/alerts`` and
``/api/silences`` do; a new or revoked silence applies to the running alert engine at once.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from proctor.core.timeparse import format_ns, parse_duration_s
from proctor.server.alerts import silence_json
from proctor.server.auth import require
from proctor.store import SpanStore
from proctor.store.alerts import AlertRecord
from proctor.store.schema import decisions as decisions_t
from proctor.telemetry.rules import SEVERITIES
from proctor.telemetry.service import AlertService
from proctor.ui.forms import check_same_origin, limit_param, read_form, see_other, session_url, trace_url
from proctor.ui.render import page, principal_of, render

router = APIRouter(tags=["console"])

STATES = ("open", "pending", "firing", "resolved")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_EVIDENCE = 50  # spans and decisions shown on an alert page (an alert keeps a bounded sample anyway)
MAX_EVIDENCE_TRACES = 10
MAX_COMMENT_CHARS = 2000  # as the REST API (SilenceBody.comment)
_MATCHER_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _service(request: Request) -> AlertService:
    service: AlertService | None = request.app.state.proctor.alerts
    if service is None:
        raise HTTPException(409, "alerting is not enabled in this server")
    return service


def _alert_view(a: AlertRecord, now_ns: int) -> dict[str, Any]:
    d = a.to_dict()
    d["url"] = f"/alerts/{a.id}"
    d["duration_ms"] = ((a.resolved_ns or now_ns) - a.started_ns) / 1e6
    d["spans"] = len(a.evidence.get("span_ids") or [])
    d["decisions"] = len(a.evidence.get("decision_ids") or [])
    return d


# -- the list ------------------------------------------------------------------------------------

@page(router, "/alerts", "alerts.html")
def alerts(request: Request, state: str | None = None, rule: str | None = None, severity: str | None = None,
           limit: str | None = None) -> dict[str, Any]:
    state, rule, severity = state or None, (rule or "").strip() or None, severity or None
    if state is not None and state not in STATES:
        raise HTTPException(400, f"unknown state {state!r}; expected one of {', '.join(STATES)}")
    if severity is not None and severity not in SEVERITIES:
        raise HTTPException(400, f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}")
    n = limit_param(limit, DEFAULT_LIMIT, MAX_LIMIT)
    service = _service(request)
    # The store filters by state and rule; severity is filtered here, over a wider window so that
    # a page of critical alerts is not cut short by the warnings between them.
    rows = service.store.list(status=state, rule_id=rule, limit=min(MAX_LIMIT * 5, n * 10) if severity else n)
    if severity:
        rows = [a for a in rows if a.severity == severity][:n]
    now = time.time_ns()
    open_now = service.store.list(status="open", limit=MAX_LIMIT)
    rules = sorted({r.id for r in service.rules.rules} | {a.rule_id for a in rows} | ({rule} if rule else set()))
    return {
        "active": "alerts",
        "filters": {"state": state, "rule": rule, "severity": severity, "limit": n},
        "states": list(STATES),
        "severities": list(SEVERITIES),
        "rules": rules,
        "alerts": [_alert_view(a, now) for a in rows],
        "firing_count": sum(1 for a in open_now if a.status == "firing"),
        "pending_count": sum(1 for a in open_now if a.status == "pending"),
        "active_silences": len(service.store.silences(active_at=now)),
    }


# -- silences (registered before /alerts/{alert_id}, which would take "silences" for an id) -----------

def parse_matchers(text: str) -> dict[str, str]:
    """``rule=cost-* agent=support`` (spaces, commas or new lines between) -> {"rule": "cost-*", ...}."""
    out: dict[str, str] = {}
    for token in re.split(r"[\s,]+", text.strip()):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep or not _MATCHER_KEY.fullmatch(key) or not value:
            raise ValueError(f"cannot read matcher {token!r}: write key=value, e.g. rule=cost-* or agent=support")
        if len(value) > 512:
            raise ValueError(f"matcher {key} is too long (at most 512 characters)")
        out[key] = value
    if not out:
        raise ValueError("a silence needs at least one matcher: rule=GLOB (on the rule id) or a group field "
                         "such as agent=NAME or session=ID")
    return out


def _silences_context(request: Request, created: str | None = None, revoked: str | None = None) -> dict[str, Any]:
    service = _service(request)
    now = time.time_ns()
    rows = [silence_json(s, now) for s in service.store.silences()]
    for s in rows:
        s["matchers_text"] = " ".join(f"{k}={v}" for k, v in s["matchers"].items())
        s["url"] = f"/alerts/silences#silence-{s['id']}"
    by_id = {r["id"]: r for r in rows}
    flash = None
    # confirmations come from the stored silence, not from the URL's text
    if created and created in by_id:
        s = by_id[created]
        flash = f"Silence {s['id']} added: {s['matchers_text']} muted until {_fmt(s['expires_ns'])}."
    elif revoked and revoked in by_id and by_id[revoked]["state"] == "revoked":
        flash = f"Silence {revoked} revoked: matching alerts notify again from now on."
    who = principal_of(request)
    return {
        "active": "alerts",
        "silences": [s for s in rows if s["state"] in ("active", "scheduled")],
        "ended": [s for s in rows if s["state"] not in ("active", "scheduled")],
        "flash": flash,
        "error": None,
        "form": {"matchers": request.query_params.get("matchers", ""), "duration": "2h", "reason": ""},
        "can_operate": who.can("operate"),
        "you": {"name": who.name, "role": who.role},
    }


def _fmt(ns: int) -> str:
    return format_ns(ns) or "?"


@page(router, "/alerts/silences", "silences.html")
def silences(request: Request, created: str | None = None, revoked: str | None = None) -> dict[str, Any]:
    return _silences_context(request, created, revoked)


@router.post("/alerts/silences", include_in_schema=False)
async def add_silence(request: Request) -> Response:
    check_same_origin(request)
    form = await read_form(request)
    matchers_text = form.get("matchers", "").strip()
    duration = form.get("duration", "").strip()
    reason = form.get("reason", "").strip()

    def refuse(status: int, message: str) -> Response:
        ctx = _silences_context(request)
        ctx.update(error=message, form={"matchers": matchers_text, "duration": duration, "reason": reason})
        return render(request, "silences.html", ctx, status_code=status)

    def work() -> Response:
        service = _service(request)
        try:
            who = require(request, "operate")
        except HTTPException as exc:
            return refuse(exc.status_code, f"Refused: {exc.detail}.")
        try:
            matchers = parse_matchers(matchers_text)
        except ValueError as exc:
            return refuse(400, f"Not added: {exc}.")
        try:
            duration_s = parse_duration_s(duration)
        except ValueError as exc:
            return refuse(400, f"Not added: duration: {exc}.")
        if not reason:
            return refuse(400, "Not added: a reason is required (it is shown next to the silence).")
        if len(reason) > MAX_COMMENT_CHARS:
            return refuse(400, f"Not added: the reason is too long (at most {MAX_COMMENT_CHARS} characters).")
        try:
            s = service.store.add_silence(matchers, duration_s=duration_s, comment=reason, by=who.name)
        except ValueError as exc:
            return refuse(400, f"Not added: {exc}.")
        service.refresh_silences()
        return see_other("/alerts/silences?" + urlencode({"created": s.id}))

    return await run_in_threadpool(work)


@router.post("/alerts/silences/{silence_id}/revoke", include_in_schema=False)
async def revoke_silence(request: Request, silence_id: str) -> Response:
    check_same_origin(request)
    await read_form(request)  # nothing needed from it; read so a bad body is refused the same way

    def work() -> Response:
        service = _service(request)
        try:
            require(request, "operate")
        except HTTPException as exc:
            ctx = _silences_context(request)
            ctx["error"] = f"Refused: {exc.detail}."
            return render(request, "silences.html", ctx, status_code=exc.status_code)
        if service.store.revoke_silence(silence_id) is None:
            raise HTTPException(404, f"no silence {silence_id!r}")
        service.refresh_silences()
        return see_other("/alerts/silences?" + urlencode({"revoked": silence_id}))

    return await run_in_threadpool(work)


# -- one alert -------------------------------------------------------------------------------------

def _spans(request: Request, trace_ids: list[str], span_ids: list[str]) -> list[dict[str, Any]]:
    """The evidence spans, looked up by (trace, span) primary key: spans have no index on the
    span id alone, and an alert names at most a few traces."""
    store = SpanStore(request.app.state.proctor.engine)
    traces = trace_ids[:MAX_EVIDENCE_TRACES]
    out = []
    for span_id in span_ids[:MAX_EVIDENCE]:
        row = None
        for trace_id in traces:
            row = store.get_span(span_id, trace_id)
            if row is not None:
                break
        if row is None:  # not stored (yet): link to the trace when there is only one to link to
            out.append({"span_id": span_id, "found": False,
                        "url": trace_url(traces[0], span_id) if len(traces) == 1 else None})
            continue
        out.append({
            "span_id": span_id, "found": True, "trace_id": row["trace_id"], "name": row["name"], "kind": row["kind"],
            "status": row["status"], "start_ns": row["start_ns"], "duration_ms": (row["duration_ns"] or 0) / 1e6,
            "agent": row["agent_name"], "session_id": row["session_id"], "tool": row["tool_name"],
            "model": row["model"], "error": row["error_message"] or row["status_message"],
            "url": trace_url(row["trace_id"], span_id), "session_url": session_url(row["session_id"]),
        })
    return out


def _decisions(request: Request, decision_ids: list[str]) -> list[dict[str, Any]]:
    ids = decision_ids[:MAX_EVIDENCE]
    if not ids:
        return []
    c = decisions_t.c
    with request.app.state.proctor.engine.connect() as conn:
        rows = conn.execute(select(decisions_t).where(c.decision_id.in_(ids)).order_by(c.seq)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["reasons"] = orjson.loads(d["reasons"])
        d["enforced"] = bool(d["enforced"])
        d["url"] = trace_url(d["trace_id"], d["span_id"])
        d["session_url"] = session_url(d["session_id"])
        out.append(d)
    return out


@page(router, "/alerts/{alert_id}", "alert.html")
def alert(request: Request, alert_id: str) -> dict[str, Any]:
    service = _service(request)
    rec = service.store.get(alert_id)
    if rec is None:
        raise HTTPException(404, f"no alert {alert_id!r} (or the prefix is not unique)")
    now = time.time_ns()
    rule = service.rules.rule(rec.rule_id)
    evidence = rec.evidence
    trace_ids = list(evidence.get("trace_ids") or [])
    span_ids = list(evidence.get("span_ids") or [])
    decision_ids = list(evidence.get("decision_ids") or [])
    where = {**rec.labels, **{k: str(v) for k, v in rec.group.items()}}
    silence_with = " ".join([f"rule={rec.rule_id}"] + [f"{k}={v}" for k, v in rec.group.items()
                                                       if v is not None and " " not in str(v)])
    matching = [silence_json(s, now) for s in service.store.silences(active_at=now)
                if s.matches(rec.rule_id, rec.group, rec.labels)]
    return {
        "active": "alerts",
        "alert": _alert_view(rec, now),
        "events": service.store.events(rec.id),
        "rule": rule.to_dict() if rule is not None else None,
        "traces": [{"trace_id": t, "url": trace_url(t)} for t in trace_ids],
        "spans": _spans(request, trace_ids, span_ids),
        "decisions": _decisions(request, decision_ids),
        "evidence_counts": {"traces": len(trace_ids), "spans": len(span_ids), "decisions": len(decision_ids)},
        "links": {
            "session": session_url(where.get("session")),
            "agent": f"/agents/{quote(where['agent'], safe='')}" if where.get("agent") else None,
        },
        "silence_url": "/alerts/silences?" + urlencode({"matchers": silence_with}),
        "silenced_now": matching,
    }
