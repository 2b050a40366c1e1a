"""Human approvals for held tool calls: requested by a guard, decided in the console, used once.

An approval is bound to a *digest* of (tool, canonical arguments, policy hash, session),
computed by the guard. That binding is what makes an approval safe: a human who approved
``refund(order=17, amount=20)`` has not approved ``refund(order=17, amount=2000)``, and an
approval granted under one policy does not carry over to another session. Approvals expire
(a pending request after its TTL; an approved one a TTL after the decision) and are single
use: :meth:`ApprovalStore.consume` flips ``approved`` to ``consumed`` in one conditional
UPDATE, so two processes racing to use the same approval cannot both succeed.

Status is stored as pending → approved | denied | expired, approved → consumed. A pending
row whose TTL has passed is *reported* as expired at once (reads compare with the clock) and
persisted as such by :meth:`ApprovalStore.expire_due`.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, func, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from proctor.store.budgets import write_transaction
from proctor.store.schema import approvals as approvals_t

__all__ = [
    "STATUSES",
    "Approval",
    "ApprovalError",
    "ApprovalNotFound",
    "ApprovalRefused",
    "ApprovalStore",
]

STATUSES = ("pending", "approved", "denied", "expired", "consumed")
_COLUMNS = tuple(c.name for c in approvals_t.columns)


class ApprovalError(Exception):
    """An approval cannot be decided or used as asked; the message says why."""


class ApprovalNotFound(ApprovalError, LookupError):
    """No approval has this id."""


class ApprovalRefused(ApprovalError):
    """An approval cannot release this call. ``reason`` is short and meant for the agent's
    error message and the trace: "digest mismatch: ...", "already used", "expired",
    "denied by bob: ...", "still pending"."""

    def __init__(self, reason: str, approval_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.approval_id = approval_id


def _iso(ns: int | None) -> str:
    if ns is None:
        return "?"
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Approval:
    id: str
    digest: str
    tool: str
    arguments: dict[str, Any]
    policy_hash: str | None
    session_id: str | None
    agent: str | None
    rule_id: str | None
    message: str | None
    status: str
    requested_ns: int
    expires_ns: int
    decided_ns: int | None
    decided_by: str | None
    decision_reason: str | None
    consumed_ns: int | None
    trace_id: str | None
    span_id: str | None

    @property
    def ttl_ns(self) -> int:
        return self.expires_ns - self.requested_ns

    @property
    def use_until_ns(self) -> int | None:
        """When an approved approval stops being usable: one TTL after the decision."""
        return None if self.decided_ns is None else self.decided_ns + self.ttl_ns

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["use_until_ns"] = self.use_until_ns
        return d


def _row_to_approval(row: Any, now_ns: int) -> Approval:
    m = row._mapping
    status = m["status"]
    if status == "pending" and m["expires_ns"] <= now_ns:
        status = "expired"  # lazily: expire_due() persists it
    return Approval(
        id=m["id"], digest=m["digest"], tool=m["tool"], arguments=orjson.loads(m["arguments"]),
        policy_hash=m["policy_hash"], session_id=m["session_id"], agent=m["agent"], rule_id=m["rule_id"],
        message=m["message"], status=status, requested_ns=m["requested_ns"], expires_ns=m["expires_ns"],
        decided_ns=m["decided_ns"], decided_by=m["decided_by"], decision_reason=m["decision_reason"],
        consumed_ns=m["consumed_ns"], trace_id=m["trace_id"], span_id=m["span_id"],
    )


class ApprovalStore:
    """Approvals in the database, shared by the guards (request, consume) and the console
    (list, decide)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def request(
        self,
        *,
        digest: str,
        tool: str,
        arguments: dict[str, Any],
        policy_hash: str | None,
        session_id: str | None,
        agent: str | None,
        rule_id: str | None,
        message: str | None,
        ttl_s: float,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> Approval:
        """Ask for approval of the call with this digest, or return the request already open.

        Idempotent: an agent retrying a held call (or two replicas of it) gets the same
        pending approval back instead of piling up requests for a human to click through.
        """
        if not digest:
            raise ValueError("an approval needs the call's digest")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        c = approvals_t.c
        with write_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                # Serialize requests for one digest (SQLite: BEGIN IMMEDIATE already does).
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:d, 727275))"), {"d": digest})
            now = time.time_ns()
            row = conn.execute(
                select(approvals_t)
                .where(c.digest == digest, c.status == "pending", c.expires_ns > now)
                .order_by(c.requested_ns.desc())
                .limit(1)
            ).first()
            if row is not None:
                return _row_to_approval(row, now)
            values: dict[str, Any] = {
                "id": uuid.uuid4().hex, "digest": digest, "tool": tool,
                "arguments": orjson.dumps(arguments, option=orjson.OPT_NON_STR_KEYS, default=str).decode(),
                "policy_hash": policy_hash, "session_id": session_id, "agent": agent, "rule_id": rule_id,
                "message": message, "status": "pending", "requested_ns": now,
                "expires_ns": now + max(1, int(ttl_s * 1e9)), "decided_ns": None, "decided_by": None,
                "decision_reason": None, "consumed_ns": None, "trace_id": trace_id, "span_id": span_id,
            }
            conn.execute(approvals_t.insert(), values)
            return self._get(conn, values["id"])

    def get(self, approval_id: str) -> Approval:
        """The approval with this id; :class:`ApprovalNotFound` if there is none."""
        with self.engine.connect() as conn:
            return self._get(conn, approval_id)

    def _get(self, conn: Connection, approval_id: str) -> Approval:
        row = conn.execute(select(approvals_t).where(approvals_t.c.id == approval_id)).first()
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return _row_to_approval(row, time.time_ns())

    def list(self, status: str | None = None, limit: int = 100, *, soonest_expiry_first: bool = False
             ) -> builtins.list[Approval]:
        """Approvals, newest request first, optionally only those in ``status`` (as reported:
        a pending approval past its TTL counts as expired). ``soonest_expiry_first``: the order of
        a queue a human works through, so the ``limit`` keeps the most urgent, not the newest."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown approval status {status!r}; expected one of {', '.join(STATUSES)}")
        c = approvals_t.c
        now = time.time_ns()
        order = (c.expires_ns, c.id) if soonest_expiry_first else (c.requested_ns.desc(), c.id.desc())
        stmt = select(approvals_t).order_by(*order).limit(max(1, limit))
        if status == "pending":
            stmt = stmt.where(c.status == "pending", c.expires_ns > now)
        elif status == "expired":
            stmt = stmt.where((c.status == "expired") | ((c.status == "pending") & (c.expires_ns <= now)))
        elif status is not None:
            stmt = stmt.where(c.status == status)
        with self.engine.connect() as conn:
            return [_row_to_approval(r, now) for r in conn.execute(stmt)]

    def expire_due(self, now_ns: int | None = None) -> int:
        """Persist 'expired' for pending approvals past their TTL. Returns how many."""
        now = time.time_ns() if now_ns is None else now_ns
        c = approvals_t.c
        with write_transaction(self.engine) as conn:
            return conn.execute(
                update(approvals_t).where(c.status == "pending", c.expires_ns <= now).values(status="expired")
            ).rowcount

    def decide(self, approval_id: str, *, approved: bool, by: str, reason: str) -> Approval:
        """Approve or deny a pending, unexpired approval.

        One conditional UPDATE, so of two humans deciding at once exactly one wins; the other
        gets :class:`ApprovalError` saying who decided first.
        """
        if not by:
            raise ValueError("a decision needs the name of who made it")
        c = approvals_t.c
        with write_transaction(self.engine) as conn:
            now = time.time_ns()
            done = conn.execute(
                update(approvals_t)
                .where(c.id == approval_id, c.status == "pending", c.expires_ns > now)
                .values(status="approved" if approved else "denied", decided_ns=now, decided_by=by,
                        decision_reason=reason)
            ).rowcount
            current = self._get(conn, approval_id)
            if done == 1:
                return current
            if current.status == "expired":
                conn.execute(
                    update(approvals_t).where(c.id == approval_id, c.status == "pending").values(status="expired")
                )
        raise ApprovalError(_why_not_pending(current))

    def consume(self, approval_id: str, digest: str) -> Approval:
        """Use an approval to release the call with ``digest``, once.

        Succeeds only if the approval is approved, bound to this very digest, not used yet,
        and within its use window (one TTL after the decision); it is then 'consumed'.
        Otherwise raises :class:`ApprovalRefused` with the reason.
        """
        c = approvals_t.c
        with write_transaction(self.engine) as conn:
            now = time.time_ns()
            done = conn.execute(
                update(approvals_t)
                .where(
                    c.id == approval_id,
                    c.digest == digest,
                    c.status == "approved",
                    c.decided_ns + (c.expires_ns - c.requested_ns) > now,
                )
                .values(status="consumed", consumed_ns=now)
            ).rowcount
            current = self._get(conn, approval_id)
        if done == 1:
            return current
        raise ApprovalRefused(_why_refused(current, digest, now), approval_id)

    def find_usable(self, digest: str) -> Approval | None:
        """The newest approved, unused, in-window approval for this digest, if any: lets a
        guard release a re-submitted call without the agent quoting an approval id."""
        c = approvals_t.c
        now = time.time_ns()
        usable: ColumnElement[bool] = and_(
            c.digest == digest, c.status == "approved", c.decided_ns + (c.expires_ns - c.requested_ns) > now
        )
        with self.engine.connect() as conn:
            row = conn.execute(
                select(approvals_t).where(usable).order_by(c.decided_ns.desc()).limit(1)
            ).first()
        return None if row is None else _row_to_approval(row, now)

    def find_recent_denial(self, digest: str) -> Approval | None:
        """The newest denial of this digest still inside its window (decided_ns + ttl): a call a
        human refused is refused again with their reason, instead of asking them once more."""
        c = approvals_t.c
        now = time.time_ns()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(approvals_t)
                .where(c.digest == digest, c.status == "denied",
                       c.decided_ns + (c.expires_ns - c.requested_ns) > now)
                .order_by(c.decided_ns.desc())
                .limit(1)
            ).first()
        return None if row is None else _row_to_approval(row, now)

    def pending_count(self) -> int:
        """How many approvals wait for a human (for the console badge and alerts)."""
        c = approvals_t.c
        now = time.time_ns()
        with self.engine.connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(approvals_t).where(c.status == "pending", c.expires_ns > now)
            ).scalar_one())


def _why_not_pending(a: Approval) -> str:
    if a.status in ("approved", "denied"):
        return f"approval {a.id} already {a.status} by {a.decided_by} at {_iso(a.decided_ns)}"
    if a.status == "consumed":
        return (f"approval {a.id} already approved by {a.decided_by} at {_iso(a.decided_ns)}"
                f" and used at {_iso(a.consumed_ns)}")
    if a.status == "expired":
        return f"approval {a.id} expired at {_iso(a.expires_ns)} before anyone decided"
    return f"approval {a.id} is {a.status}"  # pragma: no cover - pending rows are decided above


def _why_refused(a: Approval, digest: str, now: int) -> str:
    if a.digest != digest:
        return "digest mismatch: this approval is for a different call"
    if a.status == "consumed":
        return "already used"
    if a.status == "denied":
        return f"denied by {a.decided_by}: {a.decision_reason}" if a.decision_reason else f"denied by {a.decided_by}"
    if a.status == "pending":
        return "still pending"
    if a.status == "expired" or (a.use_until_ns is not None and a.use_until_ns <= now):
        return "expired"
    return f"not usable (status {a.status})"  # pragma: no cover
