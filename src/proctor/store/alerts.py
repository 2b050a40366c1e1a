"""Alerts, their history, and silences (tables ``alerts``, ``alert_events``, ``silences``).

The alert engine (``proctor.telemetry.engine``) owns the live state; this is where it writes
each transition (pending, firing, resolved), each notification attempt and each containment
action, in one transaction per batch, before it notifies anyone.
"""

from __future__ import annotations

import builtins
import fnmatch
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select, update

from proctor.store.budgets import retry_transaction, write_transaction
from proctor.store.schema import alert_events as events_t
from proctor.store.schema import alerts as alerts_t
from proctor.store.schema import silences as silences_t


def new_id() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class AlertRecord:
    id: str
    rule_id: str
    group_key: str
    group: dict[str, Any]
    status: str  # pending | firing | resolved
    severity: str
    summary: str
    value: float | None
    labels: dict[str, str]
    evidence: dict[str, list[str]]
    started_ns: int
    updated_ns: int
    fired_ns: int | None = None
    resolved_ns: int | None = None
    action: str | None = None
    silenced_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]

    def row(self) -> dict[str, Any]:
        d = self.to_dict()
        d["group"] = orjson.dumps(self.group, option=orjson.OPT_SORT_KEYS).decode()
        d["labels"] = orjson.dumps(self.labels).decode()
        d["evidence"] = orjson.dumps(self.evidence).decode()
        return d


@dataclass(slots=True)
class AlertEvent:
    alert_id: str
    kind: str  # pending | firing | resolved | notified | notify_failed | action | silenced
    detail: dict[str, Any] = field(default_factory=dict)
    ts_ns: int = 0


@dataclass(slots=True)
class Silence:
    id: str
    matchers: dict[str, str]  # rule: glob; other keys: exact group values
    comment: str
    created_by: str
    created_ns: int
    expires_ns: int
    revoked_ns: int | None = None

    def active(self, now_ns: int) -> bool:
        return self.revoked_ns is None and self.created_ns <= now_ns < self.expires_ns

    def matches(self, rule_id: str, group: dict[str, Any], labels: dict[str, str] | None = None) -> bool:
        for key, want in self.matchers.items():
            if key == "rule":
                if not fnmatch.fnmatchcase(rule_id, want):
                    return False
            elif str(group.get(key, (labels or {}).get(key, ""))) != want:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


def _alert(r: Any) -> AlertRecord:
    return AlertRecord(
        id=r.id, rule_id=r.rule_id, group_key=r.group_key, group=orjson.loads(r.group), status=r.status,
        severity=r.severity, summary=r.summary, value=r.value, labels=orjson.loads(r.labels),
        evidence=orjson.loads(r.evidence), started_ns=int(r.started_ns), updated_ns=int(r.updated_ns),
        fired_ns=r.fired_ns, resolved_ns=r.resolved_ns, action=r.action, silenced_by=r.silenced_by)


def _silence(r: Any) -> Silence:
    return Silence(r.id, orjson.loads(r.matchers), r.comment, r.created_by, int(r.created_ns), int(r.expires_ns),
                   r.revoked_ns)


class AlertStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- alerts -------------------------------------------------------------------------------
    def save(self, alerts: Sequence[AlertRecord], events: Sequence[AlertEvent] = ()) -> None:
        """Insert or update ``alerts`` and append ``events``, in one transaction."""
        if not alerts and not events:
            return
        now = time.time_ns()

        def attempt() -> None:
            with write_transaction(self.engine) as conn:
                ids = [a.id for a in alerts]
                known = {r[0] for r in conn.execute(select(alerts_t.c.id).where(alerts_t.c.id.in_(ids)))} if ids else set()
                new = [a.row() for a in alerts if a.id not in known]
                if new:
                    conn.execute(insert(alerts_t), new)
                for a in alerts:
                    if a.id in known:
                        row = a.row()
                        del row["id"]
                        conn.execute(update(alerts_t).where(alerts_t.c.id == a.id).values(**row))
                if events:
                    conn.execute(insert(events_t), [
                        {"alert_id": e.alert_id, "ts_ns": e.ts_ns or now, "kind": e.kind,
                         "detail": orjson.dumps(e.detail).decode()} for e in events])

        retry_transaction(attempt)

    def add_events(self, events: Sequence[AlertEvent]) -> None:
        self.save((), events)

    def get(self, alert_id: str) -> AlertRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts_t).where(alerts_t.c.id == alert_id)).first()
            if row is None and len(alert_id) >= 4:  # a unique prefix will do
                rows = conn.execute(select(alerts_t).where(alerts_t.c.id.like(f"{alert_id}%")).limit(2)).all()
                row = rows[0] if len(rows) == 1 else None
        return _alert(row) if row is not None else None

    def list(self, *, status: str | None = None, rule_id: str | None = None, since_ns: int | None = None,
             limit: int = 100) -> builtins.list[AlertRecord]:
        """Alerts, newest first. ``status``: pending, firing, resolved, or open (pending or firing)."""
        c = alerts_t.c
        stmt = select(alerts_t).order_by(c.started_ns.desc(), c.id).limit(max(1, limit))
        if status == "open":
            stmt = stmt.where(c.status.in_(("pending", "firing")))
        elif status is not None:
            stmt = stmt.where(c.status == status)
        if rule_id is not None:
            stmt = stmt.where(c.rule_id == rule_id)
        if since_ns is not None:
            stmt = stmt.where(c.started_ns >= since_ns)
        with self.engine.connect() as conn:
            return [_alert(r) for r in conn.execute(stmt)]

    def events(self, alert_id: str) -> builtins.list[dict[str, Any]]:
        c = events_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_t).where(c.alert_id == alert_id).order_by(c.seq)).all()
        return [{"seq": r.seq, "ts_ns": int(r.ts_ns), "kind": r.kind, "detail": orjson.loads(r.detail)} for r in rows]

    def close_open(self, now_ns: int, reason: str) -> int:
        """Resolve every alert left open (a server that stopped without resolving them)."""
        with write_transaction(self.engine) as conn:
            open_ids = [r[0] for r in conn.execute(select(alerts_t.c.id).where(
                alerts_t.c.status.in_(("pending", "firing"))))]
            if open_ids:
                conn.execute(update(alerts_t).where(alerts_t.c.id.in_(open_ids)).values(
                    status="resolved", resolved_ns=now_ns, updated_ns=now_ns))
                conn.execute(insert(events_t), [{"alert_id": i, "ts_ns": now_ns, "kind": "resolved",
                                                 "detail": orjson.dumps({"reason": reason}).decode()}
                                                for i in open_ids])
        return len(open_ids)

    # -- silences -----------------------------------------------------------------------------
    def add_silence(self, matchers: dict[str, str], *, duration_s: float, comment: str, by: str) -> Silence:
        if not matchers:
            raise ValueError("a silence needs at least one matcher (rule=GLOB, or a group field such as agent=NAME)")
        if duration_s <= 0:
            raise ValueError("a silence needs a duration longer than 0 (e.g. 1h)")
        now = time.time_ns()
        s = Silence(new_id(), {str(k): str(v) for k, v in matchers.items()}, comment, by, now,
                    now + int(duration_s * 1e9))
        with write_transaction(self.engine) as conn:
            conn.execute(insert(silences_t), [{**s.to_dict(), "matchers": orjson.dumps(s.matchers).decode()}])
        return s

    def revoke_silence(self, silence_id: str) -> Silence | None:
        now = time.time_ns()
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(silences_t).where(silences_t.c.id == silence_id)).first()
            if row is None:
                return None
            if row.revoked_ns is None:
                conn.execute(update(silences_t).where(silences_t.c.id == silence_id).values(revoked_ns=now))
        s = _silence(row)
        s.revoked_ns = s.revoked_ns or now
        return s

    def silences(self, *, active_at: int | None = None) -> builtins.list[Silence]:
        c = silences_t.c
        stmt = select(silences_t).order_by(c.created_ns.desc())
        if active_at is not None:
            stmt = stmt.where(c.revoked_ns.is_(None), c.expires_ns > active_at, c.created_ns <= active_at)
        with self.engine.connect() as conn:
            return [_silence(r) for r in conn.execute(stmt)]


__all__ = ["AlertEvent", "AlertRecord", "AlertStore", "Silence", "new_id"]
