"""The demo's governance: its policy bundle, a SIMULATED supervisor, and the figures it shows.

- :data:`POLICY` (``demo/policy.yaml``) is loaded into a :class:`~proctor.guard.Guard` on the
  demo's database and installed with ``proctor.use_guard`` for the fleet (:func:`demo_guard`).
- :class:`Supervisor` plays the human who answers approval requests. It is SIMULATED: a thread
  that reads pending approvals from the store and, after a short delay, decides them the way a
  careful person would — from the facts in the CRM — recorded as ``demo-supervisor
  (simulated)``. Refunds above its own sign-off limit it leaves alone, for you:
  ``proctor approvals ls`` / ``proctor approvals approve ID``.
- :func:`governance_figures` counts what the guard did during the demo, for the summary.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from proctor.guard import Guard
from proctor.store.approvals import Approval, ApprovalError, ApprovalStore
from proctor.store.schema import decisions as decisions_t

POLICY = Path(__file__).with_name("policy.yaml")
SUPERVISOR = "demo-supervisor (simulated)"
SIGN_OFF_LIMIT_USD = 180.0  # the simulated supervisor's own limit; above it, a manager (you) decides


def demo_guard(engine: Engine) -> Guard:
    """A guard with the demo's policy on ``engine``. Approvals wait an hour for a human; the guard
    loads the PII scanner in the background as it starts."""
    return Guard(POLICY, engine, approval_ttl_s=3600.0)


class Supervisor:
    """A SIMULATED human who decides approval requests, from the facts, after a short delay.

    For a refund it looks the order up in the CRM (its own read-only connection): it denies a
    refund of more than is refundable, of an order already refunded in full, or of an order not
    shipped yet; it approves the rest up to ``sign_off_limit_usd``, and leaves anything above
    for a manager. Other requests it approves. Only requests made after it started are its
    business (``since_ns``): pending requests from an earlier demo stay yours.
    """

    def __init__(self, store: ApprovalStore, crm_path: str | Path, *, seed: int = 0, latency: bool = True,
                 sign_off_limit_usd: float = SIGN_OFF_LIMIT_USD, poll_interval_s: float = 0.05) -> None:
        self.store = store
        self.crm_path = str(crm_path)
        self.rng = random.Random(seed)
        self.latency = latency
        self.sign_off_limit_usd = sign_off_limit_usd
        self.poll_interval_s = poll_interval_s
        self.since_ns = time.time_ns()
        self.decided: dict[str, str] = {}  # approval id -> approved | denied
        self.left: set[str] = set()  # left for a human
        self._due: dict[str, tuple[float, bool | None, str]] = {}  # id -> (when, approve?, reason)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proctor-demo-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        crm = sqlite3.connect(f"file:{self.crm_path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        crm.row_factory = sqlite3.Row
        try:
            while not self._stop.wait(self.poll_interval_s):
                try:
                    self._tick(crm)
                except Exception:  # a busy database now and then: try again on the next tick
                    continue
        finally:
            crm.close()

    def _tick(self, crm: sqlite3.Connection) -> None:
        now = time.monotonic()
        for a in self.store.list("pending", limit=100):
            if a.id in self._due or a.id in self.left or a.id in self.decided or a.requested_ns < self.since_ns:
                continue
            approve, reason = self.judge(a, crm)
            if approve is None:
                self.left.add(a.id)
                continue
            delay = self.rng.uniform(0.15, 0.6) if self.latency else 0.0  # reading the request
            self._due[a.id] = (now + delay, approve, reason)
        for approval_id, (when, approve, reason) in list(self._due.items()):
            if when > now:
                continue
            del self._due[approval_id]
            try:
                self.store.decide(approval_id, approved=bool(approve), by=SUPERVISOR, reason=reason)
                self.decided[approval_id] = "approved" if approve else "denied"
            except ApprovalError:  # someone else decided first, or it expired
                pass

    def judge(self, a: Approval, crm: sqlite3.Connection) -> tuple[bool | None, str]:
        """(approve?, why); None: not mine to decide (left pending for a manager)."""
        if a.tool != "issue_refund":
            return True, "looks fine"
        args: dict[str, Any] = a.arguments
        order_id, amount = str(args.get("order_id")), float(args.get("amount_usd") or 0)
        row = crm.execute(
            "SELECT o.item, o.total_usd, o.status, COALESCE((SELECT SUM(amount_usd) FROM refunds r"
            " WHERE r.order_id = o.id), 0) AS refunded FROM orders o WHERE o.id = ?", (order_id,)).fetchone()
        if row is None:
            return False, f"there is no order {order_id}"
        refundable = round(row["total_usd"] - row["refunded"], 2)
        if row["status"] == "processing":
            return False, f"{order_id} has not shipped: cancel it instead"
        if refundable <= 0.005:
            return False, f"{order_id} was already refunded in full"
        if amount > refundable + 0.005:
            return False, f"asks {amount:.2f} USD, only {refundable:.2f} USD of {order_id} is refundable"
        if amount > self.sign_off_limit_usd:
            return None, ""
        return True, f"checked {order_id} ({row['item']}, {row['status']}): {amount:.2f} USD is within what was paid"


@dataclass
class GovernanceFigures:
    """What the guard did since the demo started."""

    decisions: dict[str, int] = field(default_factory=dict)  # effect -> count (enforced)
    shadow: int = 0  # decisions a shadow rule would have made differently
    approvals: dict[str, int] = field(default_factory=dict)  # status -> count
    pending_ids: list[str] = field(default_factory=list)
    terminated: dict[str, str] = field(default_factory=dict)  # session id -> rule

    @property
    def total(self) -> int:
        return sum(self.decisions.values())


def governance_figures(engine: Engine, since_ns: int) -> GovernanceFigures:
    out = GovernanceFigures()
    c = decisions_t.c
    with engine.connect() as conn:
        for effect, enforced, n in conn.execute(
            select(c.effect, c.enforced, func.count()).where(c.ts_ns >= since_ns).group_by(c.effect, c.enforced)
        ):
            if enforced:
                out.decisions[effect] = out.decisions.get(effect, 0) + int(n)
            else:
                out.shadow += int(n)
        for session_id, rule_id in conn.execute(
            select(c.session_id, c.rule_id).where(c.ts_ns >= since_ns, c.effect == "terminate_session",
                                                  c.enforced.is_(True)).order_by(c.seq)
        ):
            out.terminated.setdefault(session_id, rule_id or "default")
    approvals = [a for a in ApprovalStore(engine).list(limit=10_000) if a.requested_ns >= since_ns]
    out.approvals = dict(Counter("approved" if a.status == "consumed" else a.status for a in approvals))
    out.pending_ids = [a.id for a in approvals if a.status == "pending"]
    return out
