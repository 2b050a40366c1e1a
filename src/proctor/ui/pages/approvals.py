"""The approvals pages of the console: the queue, one approval in full, approve and deny.

* ``GET /approvals``                 — pending requests first (oldest expiry first), then decided ones;
  ``?status=`` keeps one status only;
* ``GET /approvals/{id}``            — one request with everything it is bound to, and the Approve
  and Deny forms (each needs a reason) while it is pending;
* ``POST /approvals/{id}/approve``   — decide, as the signed-in principal (``approve`` permission:
  ``POST /approvals/{id}/deny``        approver or admin), then redirect back to the approval
  (POST/redirect/GET) with a confirmation. A refusal (wrong role, no reason, decided already,
  expired) renders the approval again with the reason and the matching status code.

Deciding goes through :meth:`proctor.store.approvals.ApprovalStore.decide`, exactly as
``POST /api/approvals/{id}/approve`` does, so the console and the API cannot disagree.

The form helpers (urlencoded bodies, cross-site refusals, POST/redirect/GET) are in
:mod:`proctor.ui.forms`, shared by every page where humans act.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from proctor.server.auth import require
from proctor.store.approvals import STATUSES, Approval, ApprovalError, ApprovalNotFound, ApprovalStore
from proctor.ui.forms import check_same_origin, limit_param, read_form, see_other, session_url, trace_url
from proctor.ui.render import page, principal_of, render

router = APIRouter(tags=["console"])

MAX_REASON_CHARS = 2000  # as the REST API (ApprovalDecision.reason)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


# -- views ----------------------------------------------------------------------------------------

def approval_view(a: Approval, now_ns: int) -> dict[str, Any]:
    """An approval as the pages show it: the stored fields plus links and what is left of its time."""
    d = a.to_dict()
    d.update(
        url=f"/approvals/{a.id}",
        session_url=session_url(a.session_id),
        trace_url=trace_url(a.trace_id, a.span_id),
        agent_url=f"/agents/{quote(a.agent, safe='')}" if a.agent else None,
        decidable=a.status == "pending",
        expires_in_ms=max(0.0, (a.expires_ns - now_ns) / 1e6) if a.status == "pending" else None,
    )
    return d


def _store(request: Request) -> ApprovalStore:
    return ApprovalStore(request.app.state.proctor.engine)


@page(router, "/approvals", "approvals.html")
def approvals(request: Request, status: str | None = None, limit: str | None = None) -> dict[str, Any]:
    status = status or None
    if status is not None and status not in STATUSES:
        raise HTTPException(400, f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    n = limit_param(limit, DEFAULT_LIMIT, MAX_LIMIT)
    store = _store(request)
    now = time.time_ns()
    if status is None:
        # the queue a human works through: what is waiting, the soonest to expire first; then the rest
        pending = store.list("pending", limit=n, soonest_expiry_first=True)
        waiting = {a.id for a in pending}
        decided = [a for a in store.list(None, limit=n) if a.id not in waiting and a.status != "pending"]
    elif status == "pending":
        pending, decided = store.list("pending", limit=n, soonest_expiry_first=True), []
    else:
        pending, decided = [], store.list(status, limit=n)
    return {
        "active": "approvals",
        "status": status,
        "statuses": list(STATUSES),
        "limit": n,
        "pending_count": store.pending_count(),
        "pending": [approval_view(a, now) for a in pending],
        "decided": [approval_view(a, now) for a in decided],
    }


# -- one approval ---------------------------------------------------------------------------------

_DONE = {"approved": ("approved", "consumed"), "denied": ("denied",)}


def _approval_context(request: Request, approval_id: str, done: str | None = None) -> dict[str, Any]:
    try:
        a = _store(request).get(approval_id)
    except ApprovalNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    who = principal_of(request)
    view = approval_view(a, time.time_ns())
    flash = None
    # The confirmation is built from the stored outcome, never from the URL's text: a crafted
    # link cannot make the page claim something that did not happen.
    if done in _DONE and a.status in _DONE[done]:
        verb = "Approved" if done == "approved" else "Denied"
        flash = f"{verb} by {a.decided_by}" + (f": {a.decision_reason}" if a.decision_reason else "")
        flash += "" if flash.endswith((".", "!", "?")) else "."
        flash += (" The agent may now run this exact call once." if done == "approved"
                  else " The agent is refused this call.")
    return {
        "active": "approvals",
        "approval": view,
        "flash": flash,
        "error": None,
        "reason": "",
        "tried": None,  # after a refused post: which form ("approve" or "deny") to refill
        "can_decide": who.can("approve"),
        "you": {"name": who.name, "role": who.role},
    }


@page(router, "/approvals/{approval_id}", "approval.html")
def approval(request: Request, approval_id: str, done: str | None = None) -> dict[str, Any]:
    return _approval_context(request, approval_id, done)


async def _decide(request: Request, approval_id: str, approved: bool) -> Response:
    check_same_origin(request)
    form = await read_form(request)
    reason = form.get("reason", "").strip()

    def refuse(status: int, message: str) -> Response:
        ctx = _approval_context(request, approval_id)
        ctx.update(error=message, reason=reason, tried="approve" if approved else "deny")
        return render(request, "approval.html", ctx, status_code=status)

    def work() -> Response:
        try:
            who = require(request, "approve")
        except HTTPException as exc:
            return refuse(exc.status_code, f"Refused: {exc.detail}.")
        if not reason:
            return refuse(400, "A reason is required: say why you "
                               + ("approve" if approved else "deny") + " this call (it is recorded with the decision).")
        if len(reason) > MAX_REASON_CHARS:
            return refuse(400, f"The reason is too long ({len(reason)} characters; at most {MAX_REASON_CHARS}).")
        try:
            _store(request).decide(approval_id, approved=approved, by=who.name, reason=reason)
        except ApprovalNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except ApprovalError as exc:  # decided already, used, or expired: the store says which
            return refuse(409, f"Not {'approved' if approved else 'denied'}: {exc}.")
        return see_other(f"/approvals/{approval_id}?done={'approved' if approved else 'denied'}")

    return await run_in_threadpool(work)


@router.post("/approvals/{approval_id}/approve", include_in_schema=False)
async def approve(request: Request, approval_id: str) -> Response:
    return await _decide(request, approval_id, True)


@router.post("/approvals/{approval_id}/deny", include_in_schema=False)
async def deny(request: Request, approval_id: str) -> Response:
    return await _decide(request, approval_id, False)
