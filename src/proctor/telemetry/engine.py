"""The alert engine: rules evaluated on the live stream, not on scheduled queries.

Inputs, as they happen:
- spans, after each ingested batch is durable (a pipeline subscriber);
- decisions, as any guard logs them (the decision-log feed: SDK guards in other processes and
  the server's decision API alike);
- a tick every second: windows slide, sessions age, polled counts (approval backlog, budget
  use, ingest silence) are read, pending alerts whose ``for`` has elapsed fire.

Each signal keeps a small aggregation per group (a sliding window of timestamps and amounts, or
a session's running totals). Rules that watch the same signal with the same filter, window and
grouping share one aggregation, so an event costs one update plus one condition per rule that
watches it. After an update the touched group's observation is judged by each such rule:

    (nothing) --holds--> pending --held for `for`--> firing --stops holding--> resolved
                         pending --stops holding before firing--> resolved (never notified)

One alert per (rule, group) is open at a time (deduplication). Transitions are written to the
store first, then notified (alerts of one rule that fire in the same batch go out as one
notification), then contained: a rule with ``action`` terminates the session, switches the agent
off, or forces approval for its side-effecting tools, and the action is recorded in the decision
log and as a span in the offending trace. Silences mute notifications; alerts are still recorded
and contained.

The engine keeps its state in memory; a restart starts from empty windows (alerts left open by a
previous run are resolved at start, with a note).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proctor.core import Span
from proctor.store.alerts import AlertEvent, AlertRecord, AlertStore, Silence, new_id
from proctor.telemetry.rules import AlertRule, ConditionFailed, RuleSet

log = logging.getLogger("proctor.alerts")

NS = 1_000_000_000
SESSION_IDLE_S = 600.0  # a session with no span for this long is over (its state is dropped)
MAX_GROUPS = 50_000  # per aggregation; beyond it the least recently updated groups are dropped
EVIDENCE = 10  # trace/span/decision ids kept per group
POLLED = frozenset({"budget", "approval_backlog", "ingest_stalled"})
_CONTEXT = ("agent", "version", "session", "tool", "env")  # observation fields copied to an alert's labels


def span_fields(s: Span) -> dict[str, Any]:
    """The groupable fields of a span."""
    env = s.attributes.get("proctor.env") or s.resource.get("deployment.environment.name") \
        or s.resource.get("deployment.environment")
    return {"agent": s.agent_name, "version": s.agent_version, "session": s.session_id, "tool": s.tool_name,
            "model": s.model, "env": env}


def span_view(s: Span, fields: dict[str, Any]) -> dict[str, Any]:
    """What a ``spans`` filter reads as ``span``."""
    return {"kind": s.kind, "name": s.name, "status": s.status, **fields,
            "cost_usd": s.cost_usd or 0.0, "duration_s": max(0, s.end_ns - s.start_ns) / NS,
            "input_tokens": s.input_tokens or 0, "output_tokens": s.output_tokens or 0,
            "error_type": s.error_type, "service": s.service_name}


def decision_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"agent": row.get("agent"), "session": row.get("session_id"), "rule": row.get("rule_id") or "default",
            "effect": row.get("effect"), "tool": row.get("target") if row.get("action") in ("tool_call", "tool_result")
            else None}


def decision_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"effect": row.get("effect"), "rule": row.get("rule_id") or "default", "rule_kind": row.get("rule_kind"),
            "action": row.get("action"), "target": row.get("target"), "agent": row.get("agent"),
            "session": row.get("session_id"), "enforced": bool(row.get("enforced", True)),
            "reasons": list(row.get("reasons") or [])}


class _Group:
    __slots__ = ("count", "events", "evidence", "fields", "first_ns", "last_ns", "sum_a", "sum_b")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.events: deque[tuple[int, float, float]] = deque()
        self.sum_a = 0.0
        self.sum_b = 0.0
        self.count = 0
        self.fields = fields
        self.evidence: deque[tuple[str, str]] = deque(maxlen=EVIDENCE)
        self.first_ns = 0
        self.last_ns = 0


class Tracker:
    """One aggregation: a signal, its filter, window and grouping, and the rules that read it."""

    def __init__(self, rule: AlertRule) -> None:
        self.signal = rule.signal
        self.filter = rule.filter
        self.window_ns = int(rule.window_s * NS) if rule.window_s else 0
        self.group_by = rule.group_by
        self.rules: list[AlertRule] = []
        self.groups: dict[tuple[Any, ...], _Group] = {}

    def group(self, fields: dict[str, Any], ts: int) -> tuple[tuple[Any, ...], _Group]:
        key = tuple(fields.get(g) for g in self.group_by)
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= MAX_GROUPS:
                oldest = min(self.groups, key=lambda k: self.groups[k].last_ns)
                del self.groups[oldest]
            g = self.groups[key] = _Group({k: v for k, v in fields.items() if v is not None})
            g.first_ns = ts
        else:
            g.fields.update((k, v) for k, v in fields.items() if v is not None)
        g.last_ns = max(g.last_ns, ts)
        return key, g

    def add(self, g: _Group, ts: int, a: float = 1.0, b: float = 0.0) -> None:
        if self.window_ns:
            g.events.append((ts, a, b))
        g.sum_a += a
        g.sum_b += b
        g.count += 1

    def evict(self, g: _Group, now: int) -> None:
        if not self.window_ns:
            return
        cutoff = now - self.window_ns
        events = g.events
        while events and events[0][0] <= cutoff:
            _, a, b = events.popleft()
            g.sum_a -= a
            g.sum_b -= b
            g.count -= 1
        if not events:  # no float drift left behind
            g.sum_a = g.sum_b = 0.0
            g.count = 0

    def observe(self, g: _Group, now: int, baselines: Baselines | None) -> dict[str, Any]:
        self.evict(g, now)
        obs: dict[str, Any] = dict(g.fields)
        sig = self.signal
        if self.window_ns:
            obs["window_s"] = self.window_ns / NS
        if sig == "session_cost_rate":
            obs["value"] = g.sum_a / (self.window_ns / NS / 60.0)
            obs["count"] = g.count
        elif sig == "tool_failure_rate":
            obs["count"] = g.count
            obs["value"] = g.sum_b / g.count if g.count else 0.0
        elif sig in ("session_cost", "session_duration"):
            if sig == "session_cost":
                obs["value"] = g.sum_a
            else:
                end = now if now - g.last_ns < SESSION_IDLE_S * NS else g.last_ns
                obs["value"] = max(0, end - g.first_ns) / NS
            base = baselines.p99(sig, g.fields.get("agent")) if baselines is not None else None
            if base is not None:
                obs["baseline"] = base
                obs["ratio"] = obs["value"] / base if base > 0 else 0.0
            obs["count"] = g.count
        else:  # counts: spans, decisions, loop_detected, injection_detections
            obs["value"] = float(g.count)
            obs["count"] = g.count
        return obs


class Baselines:
    """Each agent's p99 session cost and duration over recent sessions, from the traces table,
    refreshed every ``refresh_s``. An agent with fewer than ``min_sessions`` has no baseline
    (a rule reading ``baseline`` is then false for it)."""

    def __init__(self, db: Any, *, lookback_s: float = 7 * 86400, min_sessions: int = 20,
                 refresh_s: float = 60.0, clock: Callable[[], int] = time.time_ns) -> None:
        self.db = db
        self.lookback_s = lookback_s
        self.min_sessions = min_sessions
        self.refresh_s = refresh_s
        self.clock = clock
        self._values: dict[tuple[str, str], float] = {}
        self._at = 0.0

    def p99(self, signal: str, agent: str | None) -> float | None:
        if agent is None:
            return None
        if time.monotonic() - self._at > self.refresh_s:
            self.refresh()
        return self._values.get((signal, agent))

    def refresh(self) -> None:
        from sqlalchemy import func, select

        from proctor.store.schema import traces as t

        self._at = time.monotonic()
        since = self.clock() - int(self.lookback_s * NS)
        stmt = (select(t.c.agent_name, t.c.session_id, func.sum(t.c.cost_usd), func.min(t.c.start_ns),
                       func.max(t.c.end_ns))
                .where(t.c.start_ns >= since, t.c.session_id.is_not(None), t.c.agent_name.is_not(None))
                .group_by(t.c.agent_name, t.c.session_id))
        try:
            with self.db.connect() as conn:
                rows = conn.execute(stmt).all()
        except Exception as e:
            log.warning("alert baselines not refreshed: %s", e)
            return
        per: dict[str, tuple[list[float], list[float]]] = {}
        for agent, _sid, cost, start, end in rows:
            costs, durs = per.setdefault(agent, ([], []))
            costs.append(float(cost or 0.0))
            durs.append(max(0, int(end) - int(start)) / NS)
        values: dict[tuple[str, str], float] = {}
        for agent, (costs, durs) in per.items():
            if len(costs) >= self.min_sessions:
                values[("session_cost", agent)] = _p99(costs)
                values[("session_duration", agent)] = _p99(durs)
        self._values = values


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * 0.99
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class AlertState:
    record: AlertRecord
    rule: AlertRule
    obs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one call into the engine changed (for tests, the CLI's replay and the API)."""

    fired: list[AlertRecord] = field(default_factory=list)
    resolved: list[AlertRecord] = field(default_factory=list)
    pending: list[AlertRecord] = field(default_factory=list)


class AlertEngine:
    def __init__(
        self,
        rules: RuleSet,
        *,
        store: AlertStore | None = None,
        dispatch: Callable[[list[AlertRecord], AlertRule, str], None] | None = None,
        contain: Callable[[AlertRule, AlertRecord], str | None] | None = None,
        baselines: Baselines | None = None,
        poll: Callable[[int], Iterable[tuple[str, dict[str, Any]]]] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``dispatch(alerts, rule, status)`` sends a notification; ``contain(rule, alert)`` acts
        and returns what it did; ``poll(now_ns)`` yields (signal, observation) pairs for the
        polled signals (budget, approval_backlog, ingest_stalled)."""
        self.store = store
        self.dispatch = dispatch
        self.contain = contain
        self.baselines = baselines
        self.poll = poll
        self.clock = clock
        self.silences: list[Silence] = []
        self.condition_errors = 0
        self.evaluations = 0
        self._open: dict[tuple[str, tuple[Any, ...]], AlertState] = {}
        self._lock = threading.RLock()
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_ingest_ns = 0
        self.load(rules)

    # -- configuration --------------------------------------------------------------------------
    def load(self, rules: RuleSet) -> None:
        """Use ``rules`` from now on. Aggregations start empty; alerts of rules that are gone or
        changed are resolved."""
        with self._lock:
            self.rules = rules
            before = {(t.signal, t.filter.source if t.filter else None, t.window_ns, t.group_by): t
                      for t in getattr(self, "trackers", [])}
            trackers: dict[tuple[Any, ...], Tracker] = {}
            for r in rules.rules:
                t = trackers.get(r.aggregator_key())
                if t is None:
                    t = trackers[r.aggregator_key()] = Tracker(r)
                    old = before.get((t.signal, t.filter.source if t.filter else None, t.window_ns, t.group_by))
                    if old is not None:  # an unchanged aggregation keeps its windows across a reload
                        t.groups = old.groups
                t.rules.append(r)
            self.trackers = list(trackers.values())
            by_signal: dict[str, list[Tracker]] = {}
            for t in self.trackers:
                by_signal.setdefault(t.signal, []).append(t)
            self._span_trackers = [t for t in self.trackers if t.signal in (
                "spans", "session_cost_rate", "session_cost", "session_duration", "tool_failure_rate")]
            self._decision_trackers = [t for t in self.trackers if t.signal in (
                "decisions", "loop_detected", "injection_detections")]
            self._polled = by_signal
            current = {r.id: r for r in rules.rules}
            stale = []
            for k, st in self._open.items():
                new = current.get(k[0])
                if new is None or new.to_dict() != st.rule.to_dict():
                    stale.append(k)
                else:
                    st.rule = new  # unchanged: the open alert carries on
            if stale:
                out = Outcome()
                now = self.clock()
                for k in stale:
                    self._close(self._open.pop(k), now, out, reason="the rule was changed or removed")
                self._finish(out, [], now)

    def set_silences(self, silences: list[Silence]) -> None:
        self.silences = list(silences)

    # -- input --------------------------------------------------------------------------------
    def on_spans(self, batch: list[Span]) -> None:
        """A pipeline subscriber: queue the batch for the engine's thread (never blocks)."""
        self._queue.put(("spans", batch))

    def on_decisions(self, rows: list[dict[str, Any]]) -> None:
        self._queue.put(("decisions", rows))

    def start(self, tick_s: float = 1.0) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(tick_s,), name="proctor-alerts", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far has been processed (tests)."""
        done = threading.Event()
        self._queue.put(("mark", done))
        return done.wait(timeout_s)

    def _run(self, tick_s: float) -> None:
        next_tick = time.monotonic() + tick_s
        while not self._stop.is_set():
            try:
                kind, item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                kind, item = "tick", None
            try:
                if kind == "spans":
                    self.process_spans(item)
                elif kind == "decisions":
                    self.process_decisions(item)
                elif kind == "mark":
                    item.set()
                elif kind == "stop":
                    return
            except Exception:
                log.exception("alert engine failed on a %s batch", kind)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + tick_s
                try:
                    self.tick()
                except Exception:
                    log.exception("alert engine tick failed")

    # -- evaluation ---------------------------------------------------------------------------
    def process_spans(self, batch: list[Span], now_ns: int | None = None) -> Outcome:
        now = now_ns if now_ns is not None else self.clock()
        self.last_ingest_ns = now
        out = Outcome()
        touched: dict[int, tuple[Tracker, dict[tuple[Any, ...], _Group]]] = {}
        trackers = self._span_trackers
        if not trackers:
            return out
        with self._lock:
            for s in batch:
                fields = span_fields(s)
                view: dict[str, Any] | None = None
                ts = min(s.end_ns or s.start_ns, now)
                for t in trackers:
                    sig = t.signal
                    if sig == "spans":
                        if t.filter is not None:
                            if view is None:
                                view = span_view(s, fields)
                            if not self._passes(t, {"span": view}):
                                continue
                        key, g = t.group(fields, ts)
                        t.add(g, ts)
                    elif sig == "tool_failure_rate":
                        if s.kind != "tool" or not s.tool_name:
                            continue
                        key, g = t.group(fields, ts)
                        t.add(g, ts, 1.0, 1.0 if s.status == "error" else 0.0)
                    else:  # session signals
                        if not s.session_id:
                            continue
                        if sig == "session_cost_rate" and not s.cost_usd:
                            continue
                        key, g = t.group(fields, ts)
                        if sig == "session_duration":
                            g.first_ns = min(g.first_ns, s.start_ns) if g.first_ns else s.start_ns
                            g.count += 1
                        else:
                            t.add(g, ts, float(s.cost_usd or 0.0))
                    g.evidence.append((s.trace_id, s.span_id))
                    touched.setdefault(id(t), (t, {}))[1][key] = g
            self._judge_touched(touched, now, out)
            self._finish(out, [], now)
        return out

    def process_decisions(self, rows: list[dict[str, Any]], now_ns: int | None = None) -> Outcome:
        now = now_ns if now_ns is not None else self.clock()
        out = Outcome()
        trackers = self._decision_trackers
        if not trackers:
            return out
        touched: dict[int, tuple[Tracker, dict[tuple[Any, ...], _Group]]] = {}
        with self._lock:
            for row in rows:
                if not row.get("enforced", True):
                    continue  # shadow rows: what would have happened
                fields = decision_fields(row)
                ts = min(int(row.get("ts_ns") or now), now)
                for t in trackers:
                    sig = t.signal
                    if sig == "loop_detected" and row.get("rule_kind") != "loop":
                        continue
                    if sig == "injection_detections" and not any(
                            str(r).split(" — ")[-1].startswith("injection") or ": injection" in str(r)
                            for r in row.get("reasons") or ()):
                        continue
                    if sig == "decisions" and t.filter is not None and not self._passes(
                            t, {"decision": decision_view(row)}):
                        continue
                    key, g = t.group(fields, ts)
                    t.add(g, ts)
                    g.evidence.append(("decision", str(row.get("decision_id"))))
                    if row.get("trace_id"):
                        g.evidence.append((str(row["trace_id"]), str(row.get("span_id") or "")))
                    touched.setdefault(id(t), (t, {}))[1][key] = g
            self._judge_touched(touched, now, out)
            self._finish(out, [], now)
        return out

    def tick(self, now_ns: int | None = None) -> Outcome:
        """Slide windows, age sessions, read polled signals, fire what is due, resolve what cleared."""
        now = now_ns if now_ns is not None else self.clock()
        out = Outcome()
        with self._lock:
            # every open alert is judged again: its window may have emptied
            for (_rule_id, key), st in list(self._open.items()):
                if st.rule.signal in POLLED:
                    continue  # judged below, by what the poll reads
                t = self._tracker_of(st.rule)
                if t is None:
                    continue
                g = t.groups.get(key)
                if g is None:
                    self._judge(st.rule, key, {"value": 0.0, "count": 0}, now, out, None)
                    continue
                self._judge(st.rule, key, t.observe(g, now, self.baselines), now, out, g)
            # sessions age without new spans: duration grows, idle ones are dropped
            for t in self._polled.get("session_cost", []):  # cumulative: forget sessions gone idle
                for key, g in list(t.groups.items()):
                    if now - g.last_ns > SESSION_IDLE_S * NS and not any((r.id, key) in self._open for r in t.rules):
                        del t.groups[key]
            for t in self._polled.get("session_duration", []):
                for key, g in list(t.groups.items()):
                    if now - g.last_ns > SESSION_IDLE_S * NS:
                        del t.groups[key]
                        continue
                    obs = t.observe(g, now, self.baselines)
                    for r in t.rules:
                        if (r.id, key) not in self._open:
                            self._judge(r, key, obs, now, out, g)
            for t in self.trackers:  # drop empty windowed groups
                if t.window_ns and t.signal not in ("session_duration",):
                    for key, g in list(t.groups.items()):
                        t.evict(g, now)
                        if not g.events and not any((r.id, key) in self._open for r in t.rules):
                            del t.groups[key]
            if self.poll is not None:  # called every tick (it also refreshes silences)
                seen: set[tuple[str, tuple[Any, ...]]] = set()
                for signal, obs in self.poll(now):
                    for t in self._polled.get(signal, []):
                        key = tuple(obs.get(g) for g in t.group_by)
                        for r in t.rules:
                            seen.add((r.id, key))
                            self._judge(r, key, obs, now, out, None)
                for k, st in list(self._open.items()):  # no longer reported (a budget gone quiet)
                    if st.rule.signal in POLLED and k not in seen:
                        del self._open[k]
                        self._close(st, now, out)
            self._finish(out, [], now)
        return out

    def _passes(self, t: Tracker, variables: dict[str, Any]) -> bool:
        assert t.filter is not None
        try:
            return t.filter.holds(variables)
        except ConditionFailed:
            self.condition_errors += 1
            return False

    def _tracker_of(self, rule: AlertRule) -> Tracker | None:
        for t in self.trackers:
            if rule in t.rules:
                return t
        return None

    def _judge_touched(self, touched: dict[int, tuple[Tracker, dict[tuple[Any, ...], _Group]]], now: int,
                       out: Outcome) -> None:
        for t, groups in touched.values():
            for key, g in groups.items():
                obs = t.observe(g, now, self.baselines)
                for r in t.rules:
                    self._judge(r, key, obs, now, out, g)

    def _judge(self, rule: AlertRule, key: tuple[Any, ...], obs: dict[str, Any], now: int, out: Outcome,
               g: _Group | None) -> None:
        self.evaluations += 1
        try:
            holds = rule.when.holds(obs)
        except ConditionFailed:
            self.condition_errors += 1
            holds = False
        k = (rule.id, key)
        st = self._open.get(k)
        if not holds:
            if st is not None:
                del self._open[k]
                self._close(st, now, out)
            return
        evidence = list(g.evidence) if g is not None else []
        if st is None:
            group = {f: v for f, v in zip(rule.group_by, key, strict=True) if v is not None}
            gkey = hashlib.sha256(orjson.dumps([rule.id, group], option=orjson.OPT_SORT_KEYS)).hexdigest()
            rec = AlertRecord(id=new_id(), rule_id=rule.id, group_key=gkey, group=group, status="pending",
                              severity=rule.severity, summary=rule.render_summary(obs), value=_num(obs.get("value")),
                              labels={**{f: str(obs[f]) for f in _CONTEXT if obs.get(f) is not None}, **rule.labels},
                              evidence=_evidence(evidence), started_ns=now, updated_ns=now)
            st = self._open[k] = AlertState(rec, rule, obs)
            if rule.for_s > 0:
                out.pending.append(rec)
        else:
            st.obs = obs
            st.record.value = _num(obs.get("value"))
            st.record.summary = rule.render_summary(obs)
            if evidence:
                st.record.evidence = _evidence(evidence, st.record.evidence)
        if st.record.status == "pending" and now - st.record.started_ns >= rule.for_s * NS:
            rec = st.record
            rec.status, rec.fired_ns, rec.updated_ns = "firing", now, now
            rec.silenced_by = self._silenced(rule, rec, now)
            out.fired.append(rec)

    def _close(self, st: AlertState, now: int, out: Outcome, reason: str | None = None) -> None:
        rec = st.record
        was_firing = rec.status == "firing"
        rec.status, rec.resolved_ns, rec.updated_ns = "resolved", now, now
        if reason:
            rec.labels = {**rec.labels, "resolved_because": reason}
        if was_firing or st.rule.for_s > 0:  # a for_s == 0 alert that never fired was never stored
            out.resolved.append(rec)

    def _silenced(self, rule: AlertRule, rec: AlertRecord, now: int) -> str | None:
        for s in self.silences:
            if s.active(now) and s.matches(rule.id, rec.group, rec.labels):
                return s.id
        return None

    def _finish(self, out: Outcome, extra: list[AlertEvent], now: int) -> None:
        """Store, then notify, then contain."""
        if not (out.fired or out.resolved or out.pending or extra):
            return
        events = list(extra)
        events += [AlertEvent(r.id, "pending", {"value": r.value}, now) for r in out.pending]
        events += [AlertEvent(r.id, "firing", {"value": r.value, "silenced_by": r.silenced_by}, now) for r in out.fired]
        events += [AlertEvent(r.id, "resolved", {"value": r.value}, now) for r in out.resolved]
        records = {r.id: r for r in (*out.pending, *out.fired, *out.resolved)}
        if self.store is not None:
            try:
                self.store.save(list(records.values()), events)
            except Exception:
                log.exception("alerts could not be stored; notifying anyway")
        rules = {r.id: r for r in self.rules.rules}
        actions: list[AlertEvent] = []
        for r in out.fired:
            rule = rules.get(r.rule_id)
            if rule is not None and rule.action and self.contain is not None:
                try:
                    r.action = self.contain(rule, r)
                except Exception as e:
                    log.exception("containment %s for alert %s failed", rule.action, r.id)
                    r.action = f"{rule.action} failed: {e}"
                actions.append(AlertEvent(r.id, "action", {"action": rule.action, "result": r.action}, self.clock()))
        if actions and self.store is not None:
            try:
                self.store.save([r for r in out.fired if r.action], actions)
            except Exception:
                log.exception("alert actions could not be stored")
        if self.dispatch is not None:
            for status, recs in (("firing", out.fired), ("resolved", [r for r in out.resolved if r.fired_ns])):
                by_rule: dict[str, list[AlertRecord]] = {}
                for r in recs:
                    if not r.silenced_by:
                        by_rule.setdefault(r.rule_id, []).append(r)
                for rule_id, group in by_rule.items():
                    rule = rules.get(rule_id)
                    if rule is not None and rule.notify:
                        self.dispatch(group, rule, status)

    # -- reading ------------------------------------------------------------------------------
    def open_alerts(self) -> list[AlertRecord]:
        with self._lock:
            return [st.record for st in self._open.values()]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _evidence(pairs: list[tuple[str, str]], before: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    ev: dict[str, list[str]] = {k: list(v) for k, v in (before or {"trace_ids": [], "span_ids": [],
                                                                    "decision_ids": []}).items()}
    for a, b in pairs:
        if a == "decision":
            lst = ev.setdefault("decision_ids", [])
            if b not in lst:
                lst.append(b)
        else:
            for name, v in (("trace_ids", a), ("span_ids", b)):
                lst = ev.setdefault(name, [])
                if v and v not in lst:
                    lst.append(v)
    return {k: v[-EVIDENCE:] for k, v in ev.items()}


__all__ = ["AlertEngine", "AlertState", "Baselines", "Outcome", "Tracker"]
