"""Containment: what an alert rule's ``action`` does when the alert fires.

- ``terminate_session``: the kill switch ``session:<id>`` — every guard refuses the session's
  next call and ends it (the SDK raises SessionTerminated in the agent);
- ``disable_agent``: the kill switch ``agent:<name>``;
- ``require_approval``: the switch ``approvals_only:agent:<name>`` — each side-effecting call of
  the agent waits for a human.

Switches reach running guards within a second (LISTEN/NOTIFY on PostgreSQL, polling on
SQLite) and stay on until an operator lifts them (``proctor kill off SCOPE``). Each action is
recorded in the hash-chained decision log (action ``alert``, rule ``alert:<rule id>``) and as
an ``alert <rule id>`` span in the trace that set the alert off.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from proctor.core import Span
from proctor.store.alerts import AlertRecord
from proctor.store.decisions import DecisionLog, DecisionRecord
from proctor.store.killswitches import KillSwitches
from proctor.telemetry.rules import AlertRule

log = logging.getLogger("proctor.alerts")

_EFFECT = {"terminate_session": "terminate_session", "disable_agent": "terminate_session",
           "require_approval": "require_approval"}


class Containment:
    def __init__(self, engine: Engine, *, record_span: Callable[[Span], Any] | None = None) -> None:
        self.switches = KillSwitches(engine)
        self.log = DecisionLog(engine)
        self.record_span = record_span

    def scope(self, rule: AlertRule, alert: AlertRecord) -> str:
        if rule.action == "terminate_session":
            return f"session:{_field(alert, 'session')}"
        agent = _field(alert, "agent")
        if not agent:
            raise ValueError(f"alert {alert.id} names no agent to {rule.action}")
        return f"agent:{agent}" if rule.action == "disable_agent" else f"approvals_only:agent:{agent}"

    def __call__(self, rule: AlertRule, alert: AlertRecord) -> str:
        scope = self.scope(rule, alert)
        by = f"alert:{rule.id}"
        self.switches.set(scope, active=True, by=by, reason=f"alert {alert.id}: {alert.summary}"[:500])
        now = time.time_ns()
        # the newest trace; its span is not known for sure (the evidence lists are kept apart),
        # so the alert span is a root span of that trace rather than a child of a wrong parent
        traces = alert.evidence.get("trace_ids") or []
        trace_id = traces[-1] if traces else None
        span_id = None
        self.log.append([DecisionRecord(
            decision_id=f"alert-{alert.id}", ts_ns=now, trace_id=trace_id, span_id=span_id,
            session_id=_field(alert, "session"), agent=_field(alert, "agent"), action="alert",
            target=scope, effect=_EFFECT[rule.action or ""], enforced=True, rule_id=by,
            reasons=[f"{rule.action} by alert {alert.id}: {alert.summary}"], rule_kind="alert")])
        if self.record_span is not None and trace_id:
            self.record_span(Span(
                trace_id=trace_id, span_id=secrets.token_hex(8), parent_span_id=span_id, name=f"alert {rule.id}",
                start_ns=now, end_ns=now, kind="other", status="error", session_id=_field(alert, "session"),
                agent_name=_field(alert, "agent"), status_message=alert.summary,
                attributes={"proctor.alert.id": alert.id, "proctor.alert.rule_id": rule.id,
                            "proctor.alert.severity": alert.severity, "proctor.alert.action": rule.action,
                            "proctor.alert.scope": scope, "proctor.alert.summary": alert.summary},
            ))
        return f"{rule.action}: kill switch {scope} on"


def _field(alert: AlertRecord, name: str) -> str | None:
    """A group field, else the context the alert was raised in (its labels)."""
    value = alert.group.get(name) or alert.labels.get(name)
    return str(value) if value else None


__all__ = ["Containment"]
