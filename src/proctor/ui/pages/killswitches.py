"""The kill switches page of the console: every switch, and turning one on or off.

* ``GET /killswitches``  — every switch ever set (scope, on/off, who, when, why), the active ones
  first, and a form to set one, with presets for the scopes (agents from the registry, recent
  sessions).
* ``POST /killswitches`` — form fields ``scope``, ``on`` ("1" or "0"), ``reason`` (required) and
  ``next`` (a path on this site to go back to, e.g. the session page's "Stop this session" form;
  anything else is ignored). Needs the ``operate`` permission (operator or admin). Then
  POST/redirect/GET: to ``next``, or back here with a confirmation read from the store.

Setting goes through :meth:`proctor.store.killswitches.KillSwitches.set`, as
``POST /api/kill-switches`` does: running guards see the change within a second (LISTEN/NOTIFY on
PostgreSQL, a polled version counter on SQLite).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from proctor.server.auth import require, safe_next
from proctor.store import SpanStore
from proctor.store.killswitches import KillSwitch, KillSwitches, validate_scope
from proctor.store.registry import RegistryStore
from proctor.ui.forms import check_same_origin, read_form, see_other, session_url
from proctor.ui.render import page, principal_of, render

router = APIRouter(tags=["console"])

MAX_REASON_CHARS = 2000  # as the REST API (KillSwitchChange.reason)
RECENT_SESSIONS = 20

#: What each kind of scope stops, for the form's help and the table.
SCOPE_HELP: list[tuple[str, str]] = [
    ("global", "every call of every agent is refused"),
    ("agent:NAME", "every call of that agent is refused"),
    ("session:ID", "that session is ended: its next call is refused"),
    ("writes_off", "side-effecting tool calls are refused everywhere; reads and model calls go on"),
    ("writes_off:agent:NAME", "the same, for one agent"),
    ("approvals_only", "every side-effecting tool call needs a human's approval"),
    ("approvals_only:agent:NAME", "the same, for one agent"),
]


def scope_link(scope: str) -> str | None:
    """The page of what a scope names: the session or the agent."""
    kind, _, name = scope.partition(":")
    if kind == "session":
        return session_url(name)
    if kind in ("writes_off", "approvals_only") and name.startswith("agent:"):
        kind, name = "agent", name[len("agent:"):]
    if kind == "agent" and name:
        return f"/agents/{quote(name, safe='')}"
    return None


def _switch_view(s: KillSwitch) -> dict[str, Any]:
    return {**s.to_dict(), "link": scope_link(s.scope)}


def _presets(request: Request) -> dict[str, list[str]]:
    """Scopes to offer in the form: the fixed ones, one per known agent, recent sessions."""
    engine = request.app.state.proctor.engine
    agents = [a["name"] for a in RegistryStore(engine).agents()]
    sessions = SpanStore(engine).list_sessions(limit=RECENT_SESSIONS).items
    seen = set(agents)
    agents += sorted({str(s["agent_name"]) for s in sessions if s.get("agent_name") and s["agent_name"] not in seen})
    scopes = ["global", "writes_off", "approvals_only"]
    for name in agents:
        scopes += [f"agent:{name}", f"writes_off:agent:{name}", f"approvals_only:agent:{name}"]
    scopes += [f"session:{s['session_id']}" for s in sessions if s.get("session_id")]
    return {"agents": agents, "sessions": [str(s["session_id"]) for s in sessions if s.get("session_id")],
            "scopes": scopes}


def _context(request: Request, changed: str | None = None) -> dict[str, Any]:
    switches = KillSwitches(request.app.state.proctor.engine).list()
    # on first, then most recently changed (the store's order within each group)
    switches.sort(key=lambda s: not s.active)
    flash = None
    if changed:
        # built from the stored switch, not from the URL's text: a link cannot fake a confirmation
        now = next((s for s in switches if s.scope == changed), None)
        if now is not None:
            flash = (f"Kill switch {now.scope} is now {'ON' if now.active else 'OFF'} — set by {now.set_by}"
                     + (f": {now.reason}" if now.reason else "") + ".")
            if now.active:
                flash += " Running guards see it within a second."
    who = principal_of(request)
    return {
        "active": "killswitches",
        "switches": [_switch_view(s) for s in switches],
        "on_count": sum(1 for s in switches if s.active),
        "presets": _presets(request),
        "scope_help": [{"scope": s, "effect": e} for s, e in SCOPE_HELP],
        "flash": flash,
        "error": None,
        "form": {"scope": "", "on": "1", "reason": ""},
        "back": None,  # after a refused post from another page: the way back there
        "can_operate": who.can("operate"),
        "you": {"name": who.name, "role": who.role},
    }


@page(router, "/killswitches", "killswitches.html")
def killswitches(request: Request, changed: str | None = None) -> dict[str, Any]:
    return _context(request, changed)


@router.post("/killswitches", include_in_schema=False)
async def set_killswitch(request: Request) -> Response:
    check_same_origin(request)
    form = await read_form(request)
    scope = form.get("scope", "").strip()
    on = form.get("on", "").strip()
    reason = form.get("reason", "").strip()
    nxt = safe_next(form.get("next"), "")

    def refuse(status: int, message: str) -> Response:
        ctx = _context(request)
        ctx.update(error=message, form={"scope": scope, "on": on or "1", "reason": reason})
        if nxt:
            ctx["back"] = nxt
        return render(request, "killswitches.html", ctx, status_code=status)

    def work() -> Response:
        try:
            who = require(request, "operate")
        except HTTPException as exc:
            return refuse(exc.status_code, f"Refused: {exc.detail}.")
        try:
            validate_scope(scope)
        except ValueError as exc:
            return refuse(400, f"Not set: {exc}.")
        if on not in ("0", "1"):
            return refuse(400, f"Not set: 'on' must be 1 (turn the switch on) or 0 (turn it off), not {on!r}.")
        if not reason:
            return refuse(400, f"Not set: a reason is required to turn {scope} {'on' if on == '1' else 'off'} "
                               "(it is recorded with the switch).")
        if len(reason) > MAX_REASON_CHARS:
            return refuse(400, f"Not set: the reason is too long ({len(reason)} characters; at most "
                               f"{MAX_REASON_CHARS}).")
        KillSwitches(request.app.state.proctor.engine).set(scope, active=on == "1", by=who.name, reason=reason)
        return see_other(nxt or "/killswitches?" + urlencode({"changed": scope}))

    return await run_in_threadpool(work)
