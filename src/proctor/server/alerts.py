"""Alerts over HTTP: the alert history, the loaded rules, trying rules on stored data, silences.

The alert engine runs in the server (:class:`proctor.telemetry.service.AlertService`); these
endpoints read what it recorded and steer it:

- ``GET /api/alerts`` and ``GET /api/alerts/{id}``: alerts newest first, one alert with its
  events (transitions, notifications, containment actions) and its rule;
- ``GET /api/alert-rules``, ``POST /api/alert-rules/reload``: the active rules, and loading the
  configured files again (all or nothing: a refused file keeps the active rules);
- ``POST /api/alert-rules/validate`` and ``POST /api/alert-rules/test``: check a rule text, and
  replay stored spans and decisions through it to see what would have fired;
- ``GET/POST /api/silences``, ``DELETE /api/silences/{id}``: mute notifications of matching
  alerts for a while (alerts are still recorded and contained).

Errors: rules refused are 400 with every problem as ``{source, line, where, message}``; an
unknown alert or silence is 404; a bad time or duration is 400.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from proctor.core.timeparse import parse_duration_s, parse_time_ns
from proctor.server.auth import acting_as, require
from proctor.store.alerts import Silence
from proctor.telemetry.rules import AlertRulesError, RuleSet, load_rules_text
from proctor.telemetry.service import AlertService, alert_json, replay

router = APIRouter(prefix="/api", tags=["alerts"])

MAX_RULES_CHARS = 1_000_000
REQUEST_SOURCE = "<request>"


# -- request bodies -----------------------------------------------------------------------------

class _Body(BaseModel):
    # A misspelt field is an error, not silently ignored ("comment" typed "coment" must not vanish).
    model_config = ConfigDict(extra="forbid")


RulesText = Annotated[str, Field(min_length=1, max_length=MAX_RULES_CHARS,
                                 description="An alert rule file's text (YAML, kind: AlertRules).")]


class RulesBody(_Body):
    rules: RulesText


class RulesTestBody(_Body):
    rules: RulesText
    since: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        "1h", description="Replay from: ISO 8601, epoch seconds, or 15m/2h/7d ago.")
    until: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Replay until (same forms; default: now).")


class SilenceBody(_Body):
    matchers: dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=512)]] = Field(
        description="What to mute: `rule` is a glob on the rule id (cost-*); any other key must equal the "
                    "alert's group or label value (agent, session, tool, env...). Every matcher must match.",
        examples=[{"rule": "cost-*", "agent": "support"}])
    duration: str | float = Field(description="How long: 30m, 2h, 1d, or seconds.", examples=["2h"])
    comment: Annotated[str, Field(max_length=2000)] = Field("", description="Why (shown next to the silence).")
    by: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Who silences.")


# -- helpers ------------------------------------------------------------------------------------

def _json(doc: Any, status: int = 200) -> Response:
    # orjson bytes as they are, like proctor.server.api
    return Response(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS, default=str), status_code=status,
                    media_type="application/json")


def _service(request: Request) -> AlertService:
    service: AlertService | None = request.app.state.proctor.alerts
    if service is None:
        raise HTTPException(409, "alerting is not enabled in this app")
    return service


def _problems(exc: AlertRulesError, what: str, status: int = 400, **extra: Any) -> Response:
    problems = [{"source": p.source, "line": p.line, "where": p.where, "message": p.message} for p in exc.problems]
    n = len(problems)
    return _json({"detail": f"{what} ({n} problem{'s' * (n != 1)})", "problems": problems, **extra}, status)


def _notifiers(rules: RuleSet) -> list[dict[str, Any]]:
    # ids and types only: a notifier's spec holds URLs, headers and SMTP settings
    return [{"id": n.get("id"), "type": n.get("type")} for n in rules.notifiers]


def _rules_doc(rules: RuleSet) -> dict[str, Any]:
    return {"rules": [r.to_dict() for r in rules.rules], "notifiers": _notifiers(rules), "sources": rules.sources,
            "hash": rules.hash}


def _time(value: str, what: str, now_ns: int) -> int:
    try:
        # integers exactly: through float, a nanosecond timestamp loses its last digits
        return parse_time_ns(int(value) if value.strip().isdigit() else value, now_ns=now_ns)
    except ValueError as exc:
        raise HTTPException(400, f"{what}: {exc}") from exc


def silence_json(s: Silence, now_ns: int | None = None) -> dict[str, Any]:
    """A silence as the API and the CLI show it: its fields and whether it is active now."""
    now = time.time_ns() if now_ns is None else now_ns
    state = "revoked" if s.revoked_ns is not None else "active" if s.active(now) else \
        "expired" if now >= s.expires_ns else "scheduled"
    return {**s.to_dict(), "active": s.active(now), "state": state}


# -- alerts -------------------------------------------------------------------------------------

AlertStatus = Literal["pending", "firing", "resolved", "open"]


@router.get("/alerts", summary="Alerts, newest first (open = pending or firing)")
def list_alerts(
    request: Request,
    status: Annotated[AlertStatus | None, Query(description="pending, firing, resolved, or open.")] = None,
    rule: Annotated[str | None, Query(max_length=128, description="Only this rule's alerts.")] = None,
    since: Annotated[str | None, Query(max_length=64, description="Started at/after: ISO 8601, epoch seconds, "
                                                                  "or 15m/2h/7d ago.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    service = _service(request)
    since_ns = _time(since, "since", time.time_ns()) if since else None
    rows = service.store.list(status=status, rule_id=rule, since_ns=since_ns, limit=limit)
    return _json({"alerts": [alert_json(a, service.console_url) for a in rows]})


@router.get("/alerts/{alert_id}", summary="One alert with its events (transitions, notifications, actions) "
                                          "and its rule")
def get_alert(
    request: Request,
    alert_id: Annotated[str, Path(min_length=4, max_length=64, pattern=r"^[0-9A-Za-z-]+$",
                                  description="Alert id, or a unique prefix (at least 4 characters).")],
) -> Response:
    service = _service(request)
    rec = service.store.get(alert_id)
    if rec is None:
        raise HTTPException(404, f"no alert {alert_id!r} (or the prefix is not unique)")
    rule = service.rules.rule(rec.rule_id)
    return _json({**alert_json(rec, service.console_url), "events": service.store.events(rec.id),
                  "rule": rule.to_dict() if rule is not None else None})


# -- rules --------------------------------------------------------------------------------------

@router.get("/alert-rules", summary="The loaded alert rules, their files and hash, and the notifiers (id, type)")
def get_rules(request: Request) -> Response:
    service = _service(request)
    return _json({**_rules_doc(service.rules), "paths": service.paths})


@router.post("/alert-rules/reload", summary="Reload the alert rule files from the configured paths; "
                                            "all or nothing")
def reload_rules(request: Request) -> Response:
    require(request, "admin")
    service = _service(request)
    if not service.paths:
        raise HTTPException(409, "no alert rule files configured: start the server with PROCTOR_ALERT_RULES")
    before = service.rules.hash
    try:
        rules = service.reload()
    except AlertRulesError as exc:
        return _problems(exc, f"alert rules refused; the active rules {before[:12]} are unchanged", hash=before)
    return _json({**_rules_doc(rules), "paths": service.paths, "previous_hash": before,
                  "changed": rules.hash != before})


def _parse_rules(text: str) -> RuleSet | Response:
    try:
        return load_rules_text(text, REQUEST_SOURCE)
    except AlertRulesError as exc:
        return _problems(exc, "alert rules refused", valid=False)


@router.post("/alert-rules/validate", summary="Check an alert rule text: 200 with its rules, or 400 with "
                                              "every problem")
def validate_rules(request: Request, body: RulesBody) -> Response:
    require(request, "admin")
    parsed = _parse_rules(body.rules)
    if isinstance(parsed, Response):
        return parsed
    return _json({"valid": True, **_rules_doc(parsed)})


@router.post("/alert-rules/test", summary="Replay stored spans and decisions through an alert rule text: "
                                          "what would have fired")
def test_rules(request: Request, body: RulesTestBody) -> Response:
    require(request, "admin")
    service = _service(request)
    parsed = _parse_rules(body.rules)
    if isinstance(parsed, Response):
        return parsed
    now = time.time_ns()
    since_ns = _time(body.since, "since", now)
    until_ns = _time(body.until, "until", now) if body.until else now
    if until_ns <= since_ns:
        raise HTTPException(400, "until must be after since")
    result = replay(parsed, service.db, since_ns, until_ns)
    return _json(result.to_dict())


# -- silences -----------------------------------------------------------------------------------

@router.get("/silences", summary="Silences, newest first (active=true: muting now; false: expired or revoked)")
def list_silences(
    request: Request,
    active: Annotated[bool | None, Query(description="true: only active ones; false: only expired or revoked "
                                                     "ones; absent: all.")] = None,
) -> Response:
    service = _service(request)
    now = time.time_ns()
    rows = service.store.silences(active_at=now) if active else service.store.silences()
    if active is False:
        rows = [s for s in rows if not s.active(now)]
    return _json({"silences": [silence_json(s, now) for s in rows]})


@router.post("/silences", status_code=201, summary="Mute notifications of matching alerts for a while "
                                                   "(applies at once; alerts are still recorded)")
def add_silence(request: Request, body: SilenceBody) -> Response:
    who = require(request, "operate")
    service = _service(request)
    if not body.matchers:
        raise HTTPException(400, "a silence needs at least one matcher: rule (a glob on the rule id) or a group "
                                 "field such as agent, e.g. {\"rule\": \"cost-*\"}")
    try:
        duration_s = parse_duration_s(body.duration)
    except ValueError as exc:
        raise HTTPException(400, f"duration: {exc}") from exc
    try:
        s = service.store.add_silence(dict(body.matchers), duration_s=duration_s, comment=body.comment,
                                       by=acting_as(who, body.by))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    service.refresh_silences()
    return _json(silence_json(s), 201)


@router.delete("/silences/{silence_id}", summary="Revoke a silence (its alerts notify again from now on)")
def delete_silence(
    request: Request,
    silence_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    require(request, "operate")
    service = _service(request)
    s = service.store.revoke_silence(silence_id)
    if s is None:
        raise HTTPException(404, f"no silence {silence_id!r}")
    service.refresh_silences()
    return _json(silence_json(s))
