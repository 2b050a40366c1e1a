"""Governance over HTTP: the decision API, policy, approvals, kill switches, the decision log.

The decision API is the guard (:mod:`proctor.guard`) behind endpoints, for agents not written
in Python: same semantics as the SDK, sessions keyed by id and held in the server's memory.
A refused action is a *decision*, not an error: it comes back as 200 with ``"permitted":
false`` and the decision that says why; 4xx are kept for requests that are wrong (a bad body,
an unknown permit) and 409 for a server with no policy loaded.

Approvals, kill switches and the decision log live in the store, so those endpoints work
whether or not this server has a policy: an operator's console can run next to guards that
run elsewhere.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine

from proctor.server.auth import acting_as, require
from proctor.store.approvals import ApprovalError, ApprovalNotFound, ApprovalStore
from proctor.store.decisions import DecisionLog
from proctor.store.killswitches import KillSwitches, validate_scope

if TYPE_CHECKING:
    # Imported when first needed: the guard and the policy engine (CEL, YAML, JSON Schema)
    # add about a second to the start of a server that has no policy.
    from proctor.guard import Guard, GuardSession, Permit, PolicyViolation
    from proctor.policy import PolicySet

router = APIRouter(prefix="/api", tags=["governance"])

# proctor.policy.model.EFFECTS, spelt out so that this module does not import the engine
EffectName = Literal["allow", "warn", "redact", "require_approval", "deny", "terminate_session"]

NO_POLICY = "no policy loaded: start the server with --policy or PROCTOR_POLICY"


# -- building the server's guard ----------------------------------------------------------------

def policy_paths(policy: str | Sequence[str] | None) -> list[str]:
    """Policy files and directories: as given, else PROCTOR_POLICY. A string may hold several
    paths separated by ``os.pathsep`` (``:`` on Unix), like PATH."""
    if policy is None:
        policy = os.environ.get("PROCTOR_POLICY") or ""
    if isinstance(policy, str):
        return [p for p in policy.split(os.pathsep) if p.strip()]
    return [str(p) for p in policy if str(p).strip()]


def build_guard(engine: Engine, paths: Sequence[str], approval_webhook: str | None = None) -> Guard | None:
    """The server's guard on ``engine``, or None without policy paths. An invalid bundle
    raises :class:`~proctor.policy.PolicyError` naming file:line."""
    if not paths:
        return None
    from proctor.guard import Guard

    webhook = approval_webhook or os.environ.get("PROCTOR_APPROVAL_WEBHOOK") or None
    return Guard(list(paths), engine, approval_webhook=webhook)


class PermitTable:
    """Permits handed out by the decision API, kept until their result comes back.

    Bounded, because a client may never report a result (it crashed, the tool hung): a
    permit is forgotten ``ttl_s`` after it was issued, and beyond ``max_size`` the oldest go
    first. A forgotten permit's budget reservation is reclaimed by the ledger when the
    reservation expires. Permit ids are random (128 bits): knowing one is the capability to
    report its result.
    """

    def __init__(self, ttl_s: float = 3600.0, max_size: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Permit]] = OrderedDict()  # issue order = expiry order
        self._lock = threading.Lock()

    def add(self, permit: Permit) -> str:
        permit_id = secrets.token_hex(16)
        now = self._clock()
        with self._lock:
            self._evict(now)
            while len(self._items) >= self.max_size:
                self._items.popitem(last=False)
            self._items[permit_id] = (now + self.ttl_s, permit)
        return permit_id

    def take(self, permit_id: str, stage: str) -> Permit:
        """Remove and return the permit (a result is reported once). Raises LookupError if it
        is unknown or expired, ValueError if it was issued for another kind of call."""
        with self._lock:
            item = self._items.get(permit_id)
            if item is None or item[0] <= self._clock():
                self._items.pop(permit_id, None)
                raise LookupError(
                    f"unknown or expired permit {permit_id!r}: permits are single use and kept for "
                    f"{self.ttl_s:g} s; ask for a new one")
            if item[1].stage != stage:
                raise ValueError(f"permit {permit_id!r} is for a {item[1].stage}, not a {stage}")
            del self._items[permit_id]
            return item[1]

    def __len__(self) -> int:
        return len(self._items)

    def _evict(self, now: float) -> None:
        items = self._items
        while items:
            expires, _ = items[next(iter(items))]
            if expires > now:
                return
            items.popitem(last=False)


# -- request bodies -----------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Body(BaseModel):
    # A misspelt field is an error, not silently ignored: "aprroval_id" must not drop the approval.
    model_config = ConfigDict(extra="forbid")


class SessionFields(_Body):
    session_id: Name = Field(description="Session (conversation) id; the guard keeps its state by this id.")
    agent: Name = Field(description="Agent name, matched against bundle scopes and rules.")
    environment: Annotated[str, Field(max_length=256)] | None = Field(None, description="e.g. prod, staging.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels matched by bundle scopes.")


class ToolCheck(SessionFields):
    tool: Name
    args: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments, as a JSON object.")
    approval_id: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="An approved approval to use for this call (single use).")


class ToolResultBody(_Body):
    permit_id: Annotated[str, Field(min_length=1, max_length=128)]
    result: Any = Field(None, description="What the tool returned (any JSON).")
    error: Annotated[str, Field(max_length=10_000)] | None = Field(None, description="Set if the tool failed.")


class LlmCheck(SessionFields):
    model: Name
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    prompt: Any = Field(None, description="The prompt or messages (any JSON); scanned, and sized for budgets.")
    provider: Annotated[str, Field(max_length=64)] | None = None


class LlmResultBody(_Body):
    permit_id: Annotated[str, Field(min_length=1, max_length=128)]
    output: Any = None
    input_tokens: Annotated[int, Field(ge=0)] = 0
    output_tokens: Annotated[int, Field(ge=0)] = 0
    cost_usd: Annotated[float, Field(ge=0)] | None = Field(None, description="Default: priced from the model.")
    provider: Annotated[str, Field(max_length=64)] | None = None
    error: Annotated[str, Field(max_length=10_000)] | None = None


class InputCheck(SessionFields):
    content: Any = Field(description="Text or JSON arriving in the session.")
    source: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="Where it came from (e.g. email); content from a source is tracked for taint.")


class ApprovalDecision(_Body):
    by: Name | None = Field(None, description="Who decides: required when auth is off. With auth on, the "
                                              "key's name is recorded and this is ignored.")
    reason: Annotated[str, Field(max_length=2000)] = ""


class KillSwitchChange(_Body):
    scope: str = Field(description="global, agent:NAME, session:ID, writes_off[:agent:NAME] or "
                                   "approvals_only[:agent:NAME] (side-effecting calls need approval)")
    active: bool
    by: Name
    reason: Annotated[str, Field(max_length=2000)] = ""

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return validate_scope(value)


# -- helpers ------------------------------------------------------------------------------------

def _json(doc: dict[str, Any], status: int = 200) -> Response:
    # orjson bytes as they are, like proctor.server.api (FastAPI's encoder is far slower)
    return Response(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS, default=str), status_code=status,
                    media_type="application/json")


def _state(request: Request) -> Any:
    return request.app.state.proctor


def _guard(request: Request) -> Guard:
    guard = _state(request).guard
    if guard is None:
        raise HTTPException(409, NO_POLICY)
    return guard


async def _require_policy(request: Request) -> None:
    if _state(request).guard is None:
        raise HTTPException(409, NO_POLICY)


# Checked before the body is validated: without a policy, that is the answer whatever was sent.
NEEDS_POLICY = Depends(_require_policy)


def _session(guard: Guard, body: SessionFields) -> GuardSession:
    """The session's guard state. An agent with a version deployed to the named environment is
    judged by the policy bundle that version pins (as ``proctor.session(agent, env)`` is)."""
    version, policy = None, None
    if body.environment and not guard.has_session(body.session_id):
        from proctor.sdk.resolve import policy_set, resolve

        resolved = resolve(body.agent, body.environment, engine=guard.engine)
        if resolved is not None:
            version, policy = resolved.label, policy_set(resolved)
    return guard.session(body.session_id, agent=body.agent, environment=body.environment, labels=body.labels,
                         version=version, policy=policy)


def _refused(exc: PolicyViolation) -> dict[str, Any]:
    from proctor.guard import ApprovalPending, SessionTerminated

    return {
        "permitted": False,
        "decision": exc.decision.to_dict(),
        "message": str(exc),
        "approval_id": exc.approval.id if isinstance(exc, ApprovalPending) else None,
        "terminated": isinstance(exc, SessionTerminated),
    }


def _take(request: Request, permit_id: str, stage: str) -> Permit:
    try:
        return _state(request).permits.take(permit_id, stage)  # type: ignore[no-any-return]
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc


def _after(out: Any, given: Any, exc: PolicyViolation | None, key: str) -> dict[str, Any]:
    """The answer to a result report: what to hand to the model, and why it differs."""
    from proctor.guard import SessionTerminated

    if exc is not None:
        return {key: None, "withheld": True, "redacted": False, "terminated": isinstance(exc, SessionTerminated),
                "message": str(exc), "decision": exc.decision.to_dict()}
    return {key: out, "withheld": False, "redacted": out is not given, "terminated": False, "decision": None}


# -- the decision API ---------------------------------------------------------------------------

@router.post("/guard/tool", summary="Decide a tool call before it runs (a refusal is 200, permitted: false)",
             dependencies=[NEEDS_POLICY])
def guard_tool(request: Request, body: ToolCheck) -> Response:
    from proctor.guard import PolicyViolation

    require(request, "operate")
    guard = _guard(request)
    gs = _session(guard, body)
    try:
        permit = guard.check_tool(gs, body.tool, body.args, agent=body.agent, approval_id=body.approval_id)
    except PolicyViolation as exc:
        return _json(_refused(exc))
    if permit.draft:
        # draft_only tier: the tool must not run. No permit, and "permitted" false, so that a
        # client checking only that flag stays on the safe side; args are there to show the draft.
        return _json({"permitted": False, "draft": True, "decision": permit.decision.to_dict(), "permit_id": None,
                      "args": permit.args, "approval_id": None, "terminated": False})
    # every answer has the same keys, permitted or not, so a client can read "terminated" always
    return _json({"permitted": True, "draft": False, "decision": permit.decision.to_dict(),
                  "permit_id": _state(request).permits.add(permit), "args": permit.args, "approval_id": None,
                  "terminated": False})


@router.post("/guard/tool/result", summary="Report a tool's result: settles budgets, scans it, maybe redacts",
             dependencies=[NEEDS_POLICY])
def guard_tool_result(request: Request, body: ToolResultBody) -> Response:
    from proctor.guard import PolicyViolation

    require(request, "operate")
    guard = _guard(request)
    permit = _take(request, body.permit_id, "tool_call")
    try:
        out = guard.tool_result(permit, body.result, error=body.error)
    except PolicyViolation as exc:
        return _json(_after(None, body.result, exc, "result"))
    return _json(_after(out, body.result, None, "result"))


@router.post("/guard/llm", summary="Decide a model call before it is made (budgets reserve the worst case)",
             dependencies=[NEEDS_POLICY])
def guard_llm(request: Request, body: LlmCheck) -> Response:
    from proctor.guard import PolicyViolation

    require(request, "operate")
    guard = _guard(request)
    gs = _session(guard, body)
    try:
        permit = guard.check_llm(gs, body.model, max_tokens=body.max_tokens, prompt=body.prompt,
                                 agent=body.agent, provider=body.provider)
    except PolicyViolation as exc:
        return _json(_refused(exc))
    return _json({"permitted": True, "decision": permit.decision.to_dict(),
                  "permit_id": _state(request).permits.add(permit), "prompt": permit.args, "terminated": False})


@router.post("/guard/llm/result", summary="Report a model call's usage and output: settles budgets, scans it",
             dependencies=[NEEDS_POLICY])
def guard_llm_result(request: Request, body: LlmResultBody) -> Response:
    from proctor.guard import PolicyViolation

    require(request, "operate")
    guard = _guard(request)
    permit = _take(request, body.permit_id, "llm_call")
    try:
        out = guard.llm_result(permit, body.output, input_tokens=body.input_tokens,
                               output_tokens=body.output_tokens, cost_usd=body.cost_usd,
                               provider=body.provider, error=body.error)
    except PolicyViolation as exc:
        return _json(_after(None, body.output, exc, "output"))
    return _json(_after(out, body.output, None, "output"))


@router.post("/guard/input", summary="Check content arriving in a session (scanners; taint sources)",
             dependencies=[NEEDS_POLICY])
def guard_input(request: Request, body: InputCheck) -> Response:
    from proctor.guard import PolicyViolation

    require(request, "operate")
    guard = _guard(request)
    gs = _session(guard, body)
    try:
        out = guard.check_input(gs, body.content, source=body.source, agent=body.agent)
    except PolicyViolation as exc:
        return _json(_refused(exc))
    return _json({"permitted": True, "content": out, "redacted": out is not body.content, "terminated": False})


# -- policy -------------------------------------------------------------------------------------

def policy_doc(policy: PolicySet, paths: Sequence[str]) -> dict[str, Any]:
    return {
        "paths": list(paths),
        "hash": policy.hash,
        "bundles": [{"name": b.name, "version": b.version, "hash": b.hash, "source": b.source, "mode": b.mode,
                     "rules": len(b.rules)} for b in policy.bundles],
    }


@router.get("/policy", summary="The active policy bundles and their combined hash",
             dependencies=[NEEDS_POLICY])
def get_policy(request: Request) -> Response:
    guard = _guard(request)
    return _json(policy_doc(guard.policy, _state(request).policy_paths))


@router.post("/policy/reload", summary="Reload the bundles from the configured paths; all or nothing",
             dependencies=[NEEDS_POLICY])
def reload_policy(request: Request) -> Response:
    require(request, "admin")
    guard = _guard(request)
    paths = _state(request).policy_paths
    before = guard.policy.hash
    from proctor.policy import PolicyError

    try:
        policy = guard.reload(paths)
    except PolicyError as exc:
        problems = [str(p) for p in exc.problems]
        return _json({"detail": f"policy refused ({len(problems)} problem{'s' * (len(problems) != 1)}); "
                                f"the active policy {before[:12]} is unchanged", "problems": problems,
                      "hash": before}, status=400)
    return _json({**policy_doc(policy, paths), "previous_hash": before, "changed": policy.hash != before})


# -- approvals ----------------------------------------------------------------------------------

ApprovalStatus = Literal["pending", "approved", "denied", "expired", "consumed", "all"]  # STATUSES + all


def _approvals(request: Request) -> ApprovalStore:
    return ApprovalStore(_state(request).engine)


@router.get("/approvals", summary="Approvals, newest first (pending ones wait for a human)")
def list_approvals(
    request: Request,
    status: Annotated[ApprovalStatus, Query(description="pending (unexpired), ..., or all")] = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    store = _approvals(request)
    rows = store.list(None if status == "all" else status, limit=limit)
    return _json({"approvals": [a.to_dict() for a in rows], "pending": store.pending_count()})


ApprovalId = Annotated[str, Path(max_length=128)]


@router.get("/approvals/{approval_id}", summary="One approval: the call it holds, its status, who decided")
def get_approval(request: Request, approval_id: ApprovalId) -> Response:
    try:
        return _json(_approvals(request).get(approval_id).to_dict())
    except ApprovalNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


def _decide(request: Request, approval_id: str, body: ApprovalDecision, approved: bool) -> Response:
    who = require(request, "approve")
    # auth on: the approver is who holds the key, whatever the body says; auth off: the body says
    by = acting_as(who, body.by)
    if not by:
        raise HTTPException(422, "by: say who decides (required while auth is off)")
    try:
        a = _approvals(request).decide(approval_id, approved=approved, by=by, reason=body.reason)
    except ApprovalNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except ApprovalError as exc:  # already decided, used, or expired: the store says which
        raise HTTPException(409, str(exc)) from exc
    return _json(a.to_dict())


@router.post("/approvals/{approval_id}/approve", summary="Approve a pending call (it may then run once)")
def approve(request: Request, approval_id: ApprovalId, body: ApprovalDecision) -> Response:
    return _decide(request, approval_id, body, True)


@router.post("/approvals/{approval_id}/deny", summary="Deny a pending call")
def deny(request: Request, approval_id: ApprovalId, body: ApprovalDecision) -> Response:
    return _decide(request, approval_id, body, False)


# -- kill switches ------------------------------------------------------------------------------

@router.get("/kill-switches", summary="Every kill switch ever set, on or off, most recently changed first")
def list_kill_switches(request: Request) -> Response:
    switches = KillSwitches(_state(request).engine).list()
    return _json({"kill_switches": [s.to_dict() for s in switches],
                  "active": [s.scope for s in switches if s.active]})


@router.post("/kill-switches", summary="Turn a kill switch on or off; running guards see it within a second")
def set_kill_switch(request: Request, body: KillSwitchChange) -> Response:
    who = require(request, "operate")
    switch = KillSwitches(_state(request).engine).set(body.scope, active=body.active, by=acting_as(who, body.by),
                                                      reason=body.reason)
    return _json(switch.to_dict())


# -- the decision log ---------------------------------------------------------------------------

def flush_decisions(request: Request) -> None:
    """Let this server's own recent decisions reach the log before it is read."""
    guard = _state(request).guard
    if guard is not None:
        guard.flush(5.0)


@router.get("/decisions", summary="The decision log, newest first")
def list_decisions(
    request: Request,
    session_id: Annotated[str | None, Query(max_length=256)] = None,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    effect: Annotated[EffectName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, description="next_before_seq from the previous page")] = None,
) -> Response:
    flush_decisions(request)
    rows = DecisionLog(_state(request).engine).list(session_id=session_id, trace_id=trace_id, effect=effect,
                                                     limit=limit, before_seq=before_seq)
    more = len(rows) == limit and rows[-1]["seq"] > 1
    return _json({"decisions": rows, "next_before_seq": rows[-1]["seq"] if more else None})


@router.get("/audit/verify", summary="Recompute the decision log's hash chain: finds edited or deleted rows")
def audit_verify(request: Request) -> Response:
    flush_decisions(request)
    return _json(DecisionLog(_state(request).engine).verify().to_dict())
