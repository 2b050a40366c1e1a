"""The alerting service as the server runs it, and the replay behind ``proctor alerts test``.

``AlertService`` ties the pieces together: rule files (``PROCTOR_ALERT_RULES``), the engine
fed by the pipeline and the decision feed, the store, the notifiers' dispatcher, containment,
the polled signals and silences.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from proctor.core import Span
from proctor.store.alerts import AlertEvent, AlertRecord, AlertStore
from proctor.store.schema import approvals as approvals_t
from proctor.store.schema import budget_counters as budgets_t
from proctor.store.schema import decisions as decisions_t
from proctor.store.schema import spans as spans_t
from proctor.telemetry.containment import Containment
from proctor.telemetry.engine import NS, POLLED, AlertEngine, Baselines
from proctor.telemetry.notify import DeliveryResult, Dispatcher, Notification, build_notifier
from proctor.telemetry.rules import AlertRule, RuleSet, load_rules

log = logging.getLogger("proctor.alerts")

BUDGET_RECENT_S = 600.0  # budgets updated within this long are watched by the budget signal
SILENCE_REFRESH_S = 5.0


def alert_json(rec: AlertRecord, console_url: str | None = None) -> dict[str, Any]:
    d = rec.to_dict()
    d["url"] = f"{console_url.rstrip('/')}/api/alerts/{rec.id}" if console_url else None
    return d


class StorePoller:
    """The polled signals: approval backlog, budget use, and how long ingest has been silent."""

    def __init__(self, db: Engine, last_ingest: Callable[[], int]) -> None:
        self.db = db
        self.last_ingest = last_ingest
        self._warned = False

    def __call__(self, now: int) -> Iterable[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        try:
            with self.db.connect() as conn:
                pending, oldest = conn.execute(
                    select(func.count(), func.min(approvals_t.c.requested_ns)).where(approvals_t.c.status == "pending")
                ).one()
                out.append(("approval_backlog", {"value": float(pending or 0), "count": int(pending or 0),
                                                 "oldest_s": (now - int(oldest)) / NS if oldest else 0.0}))
                rows = conn.execute(select(budgets_t).where(
                    budgets_t.c.updated_ns >= now - int(BUDGET_RECENT_S * NS), budgets_t.c.limit_value > 0)).all()
                for r in rows:
                    key = str(r.key)
                    obs: dict[str, Any] = {"budget": f"{key} {r.metric}", "value": float(r.used) / float(r.limit_value)}
                    if key.startswith("session:"):
                        obs["session"] = key.split(":", 1)[1]
                    elif key.startswith("agent_day:"):
                        obs["agent"] = key.split(":")[1]
                    out.append(("budget", obs))
        except Exception as e:  # a database away for a moment: skip this tick
            if not self._warned:
                log.warning("alert polling failed: %s", e)
                self._warned = True
        last = self.last_ingest()
        if last:
            out.append(("ingest_stalled", {"value": max(0, now - last) / NS}))
        return out


class AlertService:
    def __init__(self, db: Engine, paths: Sequence[str], *, record_span: Callable[[Span], Any] | None = None,
                 console_url: str | None = None, max_attempts: int = 5, base_backoff_s: float = 0.5) -> None:
        self.db = db
        self.paths = list(paths)
        self.console_url = console_url
        self.store = AlertStore(db)
        self.rules = load_rules(self.paths) if self.paths else RuleSet()
        self._dispatcher_args = {"max_attempts": max_attempts, "base_backoff_s": base_backoff_s}
        self.dispatcher = self._make_dispatcher(self.rules)
        self.containment = Containment(db, record_span=record_span)
        self.engine = AlertEngine(self.rules, store=self.store, dispatch=self._dispatch, contain=self.containment,
                                  baselines=Baselines(db), poll=self._poll)
        self._poller = StorePoller(db, lambda: self.engine.last_ingest_ns)
        self._silences_at = 0.0

    def _make_dispatcher(self, rules: RuleSet) -> Dispatcher:
        notifiers = {n["id"]: build_notifier(n) for n in rules.notifiers}
        return Dispatcher(notifiers, on_result=self._delivered, **self._dispatcher_args)  # type: ignore[arg-type]

    def start(self) -> None:
        closed = self.store.close_open(time.time_ns(), "the server restarted: alerts are re-raised from live data")
        if closed:
            log.info("resolved %d alert(s) left open by an earlier run", closed)
        self.refresh_silences()
        self.engine.start()

    def close(self) -> None:
        self.engine.close()
        self.dispatcher.close(2.0)

    def reload(self) -> RuleSet:
        """Load the rule files again; all or nothing (an invalid file raises AlertRulesError and
        the active rules stay)."""
        rules = load_rules(self.paths) if self.paths else RuleSet()
        old = self.dispatcher
        self.dispatcher = self._make_dispatcher(rules)
        self.engine.load(rules)
        self.rules = rules
        old.close(1.0)
        return rules

    def refresh_silences(self) -> None:
        self._silences_at = time.monotonic()
        try:
            self.engine.set_silences(self.store.silences(active_at=time.time_ns()))
        except Exception as e:
            log.warning("silences not refreshed: %s", e)

    def _poll(self, now: int) -> Iterable[tuple[str, dict[str, Any]]]:
        if time.monotonic() - self._silences_at > SILENCE_REFRESH_S:
            self.refresh_silences()  # silences made elsewhere (the CLI) apply within seconds
        if not any(r.signal in POLLED for r in self.rules.rules):
            return ()
        return self._poller(now)

    def _dispatch(self, recs: list[AlertRecord], rule: AlertRule, status: str) -> None:
        first = recs[0]
        summary = first.summary if len(recs) == 1 else f"{len(recs)} alerts — {first.summary}, …"
        key = first.group_key if len(recs) == 1 else hashlib.sha256(
            orjson.dumps([rule.id, sorted(r.group_key for r in recs)])).hexdigest()
        n = Notification(rule_id=rule.id, status=status, severity=rule.severity, summary=summary,
                         alerts=[alert_json(r, self.console_url) for r in recs], group_key=key,
                         action=first.action if status == "firing" else None)
        self.dispatcher.submit(n, list(rule.notify))

    def _delivered(self, res: DeliveryResult) -> None:
        if not res.ok and not res.final:
            return  # a retry follows; the final outcome is recorded
        kind = "notified" if res.ok else "notify_failed"
        detail = {"notifier": res.notifier_id, "attempt": res.attempt, "status": res.notification.status,
                  "error": res.error}
        try:
            self.store.add_events([AlertEvent(a["id"], kind, detail, res.ts_ns) for a in res.notification.alerts])
        except Exception:
            log.exception("could not record a notification result")


# -- replay: `proctor alerts test` ---------------------------------------------------------------

_SPAN_COLUMNS = ("trace_id", "span_id", "name", "kind", "start_ns", "end_ns", "status", "service_name",
                 "session_id", "agent_name", "agent_version", "model", "input_tokens", "output_tokens",
                 "cost_usd", "tool_name", "error_type", "attributes")


def _stored_spans(db: Engine, since_ns: int, until_ns: int, chunk: int = 5000) -> Iterator[Span]:
    cols = [spans_t.c[n] for n in _SPAN_COLUMNS]
    last = (since_ns, "")
    with db.connect() as conn:
        while True:
            stmt = (select(*cols).where(spans_t.c.end_ns <= until_ns,
                                        (spans_t.c.end_ns > last[0]) | ((spans_t.c.end_ns == last[0])
                                                                         & (spans_t.c.span_id > last[1])))
                    .order_by(spans_t.c.end_ns, spans_t.c.span_id).limit(chunk))
            rows = conn.execute(stmt).all()
            for r in rows:
                attrs = r.attributes
                env = None
                if attrs and "proctor.env" in attrs:
                    env = (orjson.loads(attrs) if isinstance(attrs, str) else attrs).get("proctor.env")
                yield Span(trace_id=r.trace_id, span_id=r.span_id, name=r.name, start_ns=int(r.start_ns),
                           end_ns=int(r.end_ns), kind=r.kind, status=r.status, service_name=r.service_name,
                           session_id=r.session_id, agent_name=r.agent_name, agent_version=r.agent_version,
                           model=r.model, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                           cost_usd=r.cost_usd, tool_name=r.tool_name, error_type=r.error_type,
                           attributes={"proctor.env": env} if env else {})
            if len(rows) < chunk:
                return
            last = (int(rows[-1].end_ns), rows[-1].span_id)


def _stored_decisions(db: Engine, since_ns: int, until_ns: int) -> Iterator[dict[str, Any]]:
    with db.connect() as conn:
        for r in conn.execute(select(decisions_t).where(decisions_t.c.ts_ns > since_ns, decisions_t.c.ts_ns <= until_ns)
                              .order_by(decisions_t.c.seq)):
            d = dict(r._mapping)
            d["reasons"] = orjson.loads(d["reasons"])
            yield d


@dataclass
class Replay:
    since_ns: int
    until_ns: int
    spans: int = 0
    decisions: int = 0
    fired: list[AlertRecord] = field(default_factory=list)
    resolved: list[AlertRecord] = field(default_factory=list)
    condition_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"since_ns": self.since_ns, "until_ns": self.until_ns, "spans": self.spans,
                "decisions": self.decisions, "condition_errors": self.condition_errors,
                "fired": [a.to_dict() for a in self.fired], "resolved": [a.to_dict() for a in self.resolved]}


def replay(rules: RuleSet, db: Engine, since_ns: int, until_ns: int, *,
           progress: Callable[[int], None] | None = None) -> Replay:
    """Play stored spans and decisions from ``since_ns`` to ``until_ns`` through ``rules`` in event
    time (ticking every second of it) and list what would have fired. Nothing is stored, sent
    or contained; the polled signals (budget, approval backlog, ingest) are not replayed."""
    engine = AlertEngine(rules, baselines=Baselines(db, clock=lambda: until_ns))
    out = Replay(since_ns, until_ns)
    spans = ((s.end_ns, 0, i, s) for i, s in enumerate(_stored_spans(db, since_ns, until_ns)))
    decisions = ((int(d["ts_ns"]), 1, i, d) for i, d in enumerate(_stored_decisions(db, since_ns, until_ns)))
    batch_spans: list[Span] = []
    batch_decisions: list[dict[str, Any]] = []
    second = None

    def keep(o: Any) -> None:  # copies: a record of an open alert keeps changing in the engine
        out.fired += [replace(r) for r in o.fired]
        out.resolved += [replace(r) for r in o.resolved]

    def flush(now: int) -> None:
        if batch_spans:
            keep(engine.process_spans(batch_spans, now))
            batch_spans.clear()
        if batch_decisions:
            keep(engine.process_decisions(batch_decisions, now))
            batch_decisions.clear()
        keep(engine.tick(now))

    def idle(start_sec: int, end_sec: int) -> None:
        """The clock runs on between events: pending alerts fire, windows empty."""
        sec = start_sec
        while sec < end_sec and engine.open_alerts():
            sec += 1
            keep(engine.tick(sec * NS + NS - 1))

    for ts, kind, _, item in heapq.merge(spans, decisions, key=lambda x: (x[0], x[1], x[2])):
        sec = ts // NS
        if second is not None and sec != second:
            flush(second * NS + NS - 1)
            idle(second, sec - 1)
        second = sec
        if kind == 0:
            batch_spans.append(item)  # type: ignore[arg-type]
            out.spans += 1
        else:
            batch_decisions.append(item)  # type: ignore[arg-type]
            out.decisions += 1
        if progress is not None and (out.spans + out.decisions) % 1000 == 0:
            progress(out.spans + out.decisions)
    if second is not None:
        flush(second * NS + NS - 1)
        idle(second, min(until_ns // NS, second + 3600))  # at most an hour of idle clock after the last event
    out.condition_errors = engine.condition_errors
    return out


def rule_paths(value: str | Sequence[str] | None) -> list[str]:
    import os

    if value is None:
        value = os.environ.get("PROCTOR_ALERT_RULES") or ""
    if isinstance(value, str):
        return [p for p in value.split(os.pathsep) if p.strip()]
    return [str(p) for p in value if str(p).strip()]


__all__ = ["AlertService", "Replay", "StorePoller", "alert_json", "replay", "rule_paths"]
