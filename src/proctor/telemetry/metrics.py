"""Prometheus metrics over the span stream, the decision log and the approval queue.

:class:`ProctorMetrics` owns a :class:`prometheus_client.CollectorRegistry` of its own (never the
process-global one, so several apps in one process do not collide) and is fed three ways:

* ``on_spans(batch)`` — a pipeline subscriber, called in the writer thread after each batch is
  durable. It runs on the ingest hot path, so it aggregates the batch in plain dicts first and
  touches each labelled series once per batch, not once per span.
* ``on_decisions(rows)`` — a :class:`~proctor.telemetry.feeds.DecisionFeed` subscriber.
* the approval queue is read at scrape time, by a collector (two small queries).

Sessions are inferred from ``Span.session_id``: one starts when first seen and ends after
``session_idle_s`` without a span, which :meth:`ProctorMetrics.tick` checks (the app calls it
every second; tests call it with a fake clock).

Label cardinality is bounded: no session or trace id is ever a label, every value is cut to
128 characters, and each label name keeps at most ``max_label_values`` distinct values (shared
by all metrics, so a tool named in one metric is named in all); later newcomers are counted as
``"other"``. Missing values are ``"unknown"``.

Counters are this process's: with several replicas, sum them in PromQL. The approval gauges
read shared state, so every replica reports the same value (take ``max``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select

from proctor.core import Span
from proctor.store.schema import approvals as approvals_t

__all__ = ["OTHER", "UNKNOWN", "ProctorMetrics"]

log = logging.getLogger(__name__)

OTHER = "other"
UNKNOWN = "unknown"
_MAX_LABEL_CHARS = 128
# Model calls: trace totals count these too (agent spans often repeat their children's usage).
_USAGE_KINDS = frozenset({"llm", "embedding"})

LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
SESSION_DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
SESSION_COST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)
APPROVAL_WAIT_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
                         86400.0)


class _LabelCap:
    """The distinct values one label has taken, at most ``limit``; newcomers beyond become "other"."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return UNKNOWN
        if value in self.seen:
            return value
        if len(value) > _MAX_LABEL_CHARS:
            value = value[:_MAX_LABEL_CHARS]
            if value in self.seen:
                return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


def rule_label(rule_id: str | None) -> str:
    """The ``rule`` label of a decision: the policy's rule id, with per-call parts removed.

    ``approval:<id>`` and ``kill_switch:session:<id>`` carry an approval or session id, which
    must never become a label; they are counted as ``approval`` and ``kill_switch:session``.
    No rule (a bundle's default effect) is ``default``, as on the span event.
    """
    if not rule_id:
        return "default"
    if rule_id.startswith("approval:"):
        return "approval"
    if rule_id.startswith("kill_switch:"):
        parts = rule_id.split(":", 2)
        return ":".join(parts[:2])  # kill_switch:global | kill_switch:agent | kill_switch:session
    return rule_id


@dataclass(slots=True)
class _Session:
    agent: str  # the label it was counted under when it started
    start_ns: int  # earliest span start
    end_ns: int  # latest span end
    cost_usd: float
    seen_ns: int  # when its last span arrived (the idle clock)


class ProctorMetrics:
    """The server's Prometheus metrics. ``engine`` (optional) is read for the approval gauges."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        session_idle_s: float = 300.0,
        max_sessions: int = 100_000,
        max_label_values: int = 200,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.registry = CollectorRegistry()
        self.session_idle_s = session_idle_s
        self.max_sessions = max(1, max_sessions)
        self.max_label_values = max_label_values
        self._clock = clock
        self._lock = threading.Lock()  # session state: on_spans (writer thread) vs tick
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently seen first
        self._last_seen_ns = 0
        self._caps: dict[str, _LabelCap] = {}
        self._label_lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        r = self.registry

        self.spans_ingested = Counter("proctor_spans_ingested", "Spans durably ingested", registry=r)
        self.ingest_lag = Histogram("proctor_ingest_lag_seconds", "Time from a span's end to its durable ingest",
                                    buckets=LAG_BUCKETS, registry=r)
        self.last_ingest = Gauge("proctor_last_ingest_timestamp_seconds",
                                 "Unix time of the last durably ingested batch", registry=r)
        self.llm_tokens = Counter("proctor_llm_tokens", "Model tokens, by direction (input|output)",
                                  ["agent", "version", "model", "direction"], registry=r)
        self.llm_cost = Counter("proctor_llm_cost_usd", "Model cost in USD", ["agent", "version", "model"], registry=r)
        self.llm_calls = Counter("proctor_llm_calls", "Model calls (LLM and embedding spans)",
                                 ["agent", "version", "model"], registry=r)
        self.tool_calls = Counter("proctor_tool_calls", "Tool calls", ["tool", "agent"], registry=r)
        self.tool_failures = Counter("proctor_tool_failures", "Tool calls that ended in error", ["tool", "agent"],
                                     registry=r)
        self.sessions_started = Counter("proctor_sessions_started", "Sessions seen for the first time", ["agent"],
                                        registry=r)
        self.sessions_ended = Counter("proctor_sessions_ended", "Sessions ended (idle for session_idle_s)",
                                      ["agent"], registry=r)
        self.sessions_active = Gauge("proctor_sessions_active", "Sessions with a span in the last session_idle_s",
                                     ["agent"], registry=r)
        self.session_duration = Histogram("proctor_session_duration_seconds",
                                          "Ended sessions: first span start to last span end", ["agent"],
                                          buckets=SESSION_DURATION_BUCKETS, registry=r)
        self.session_cost = Histogram("proctor_session_cost_usd", "Ended sessions: model cost in USD", ["agent"],
                                      buckets=SESSION_COST_BUCKETS, registry=r)
        self.decisions = Counter("proctor_decisions", "Guard decisions in the decision log",
                                 ["effect", "rule", "action", "enforced"], registry=r)
        self.loop_detections = Counter("proctor_loop_detections", "Decisions made by a loop-breaker rule",
                                       ["agent", "rule"], registry=r)
        self.approvals: _ApprovalCollector | None = None
        if engine is not None:
            self.approvals = _ApprovalCollector(engine, clock)
            r.register(self.approvals)

    # --- feeding -------------------------------------------------------------------------------

    def _label(self, name: str, value: str | None) -> str:
        # once per distinct key per batch, not per span; locked because the writer thread and the
        # decision feed's thread share the caps (an unlocked race could admit one value too many)
        with self._label_lock:
            cap = self._caps.get(name)
            if cap is None:
                cap = self._caps[name] = _LabelCap(self.max_label_values)
            return cap(value)

    def on_spans(self, batch: Sequence[Span]) -> None:
        """Count a durably written batch (a pipeline subscriber; runs in the writer thread)."""
        if not batch:
            return
        now = self._clock()
        observe_lag = self.ingest_lag.observe
        llm: dict[tuple[str | None, str | None, str | None], list[float]] = {}  # calls, in, out, cost
        tools: dict[tuple[str | None, str | None], list[int]] = {}  # calls, failures
        sessions: dict[str, list[Any]] = {}  # agent, min start, max end, cost
        for s in batch:
            lag = now - s.end_ns
            observe_lag(lag / 1e9 if lag > 0 else 0.0)
            kind = s.kind
            cost = 0.0
            if kind in _USAGE_KINDS:
                key = (s.agent_name, s.agent_version, s.model or s.request_model)
                acc = llm.get(key)
                if acc is None:
                    acc = llm[key] = [0, 0, 0, 0.0]
                cost = s.cost_usd or 0.0
                acc[0] += 1
                acc[1] += s.input_tokens or 0
                acc[2] += s.output_tokens or 0
                acc[3] += cost
            elif kind == "tool":
                tkey = (s.tool_name, s.agent_name)
                tacc = tools.get(tkey)
                if tacc is None:
                    tacc = tools[tkey] = [0, 0]
                tacc[0] += 1
                if s.status == "error":
                    tacc[1] += 1
            sid = s.session_id
            if sid:
                sacc = sessions.get(sid)
                if sacc is None:
                    sessions[sid] = [s.agent_name, s.start_ns, s.end_ns, cost]
                else:
                    if sacc[0] is None:
                        sacc[0] = s.agent_name
                    if s.start_ns < sacc[1]:
                        sacc[1] = s.start_ns
                    if s.end_ns > sacc[2]:
                        sacc[2] = s.end_ns
                    sacc[3] += cost

        self.spans_ingested.inc(len(batch))
        self.last_ingest.set(now / 1e9)
        label = self._label
        for (agent, version, model), (calls, tin, tout, usd) in llm.items():
            a, v, m = label("agent", agent), label("version", version), label("model", model)
            self.llm_calls.labels(a, v, m).inc(calls)
            self.llm_tokens.labels(a, v, m, "input").inc(tin)
            self.llm_tokens.labels(a, v, m, "output").inc(tout)
            self.llm_cost.labels(a, v, m).inc(usd)
        for (tool, agent), (calls, failures) in tools.items():
            t, a = label("tool", tool), label("agent", agent)
            self.tool_calls.labels(t, a).inc(calls)
            failed = self.tool_failures.labels(t, a)  # created at 0, so rate() works before a failure
            if failures:
                failed.inc(failures)
        if sessions:
            self._track_sessions(sessions, now)

    def _track_sessions(self, seen: dict[str, list[Any]], now: int) -> None:
        with self._lock:
            now = self._last_seen_ns = max(now, self._last_seen_ns)  # keeps the dict ordered by seen_ns
            active = self._sessions
            for sid, (agent, start, end, cost) in seen.items():
                sess = active.get(sid)
                if sess is None:
                    a = self._label("agent", agent)
                    active[sid] = _Session(a, start, end, cost, now)
                    self.sessions_started.labels(a).inc()
                    self.sessions_active.labels(a).inc()
                    continue
                active.move_to_end(sid)
                sess.seen_ns = now
                sess.start_ns = min(sess.start_ns, start)
                sess.end_ns = max(sess.end_ns, end)
                sess.cost_usd += cost
            while len(active) > self.max_sessions:  # bounded: the least recently seen ends early
                self._end(active.popitem(last=False)[1])

    def active_sessions(self) -> list[tuple[str, str, int, float]]:
        """(session id, agent label, last seen ns, cost seen) of each session active now, least
        recently seen first (the console's overview lists them)."""
        with self._lock:
            return [(sid, s.agent, s.seen_ns, s.cost_usd) for sid, s in self._sessions.items()]

    def tick(self, now_ns: int | None = None) -> int:
        """End sessions idle for ``session_idle_s`` as of ``now_ns`` (default: now); returns how many."""
        now = self._clock() if now_ns is None else now_ns
        cutoff = now - int(self.session_idle_s * 1e9)
        ended = 0
        with self._lock:
            active = self._sessions
            while active:
                sess = next(iter(active.values()))
                if sess.seen_ns > cutoff:
                    break
                active.popitem(last=False)
                self._end(sess)
                ended += 1
        return ended

    def _end(self, sess: _Session) -> None:
        a = sess.agent
        self.sessions_ended.labels(a).inc()
        self.sessions_active.labels(a).dec()
        self.session_duration.labels(a).observe(max(0, sess.end_ns - sess.start_ns) / 1e9)
        self.session_cost.labels(a).observe(sess.cost_usd)

    def on_decisions(self, rows: Iterable[dict[str, Any]]) -> None:
        """Count decision-log rows (a DecisionFeed subscriber)."""
        counts: dict[tuple[Any, ...], int] = {}
        loops: dict[tuple[Any, ...], int] = {}
        for r in rows:
            rule = rule_label(r.get("rule_id"))
            key = (r.get("effect"), rule, r.get("action"), "true" if r.get("enforced") else "false")
            counts[key] = counts.get(key, 0) + 1
            if r.get("rule_kind") == "loop":
                lkey = (r.get("agent"), rule)
                loops[lkey] = loops.get(lkey, 0) + 1
        label = self._label
        for (effect, rule, action, enforced), n in counts.items():
            self.decisions.labels(label("effect", effect), label("rule", rule), label("action", action),
                                  enforced).inc(n)
        for (agent, rule), n in loops.items():
            self.loop_detections.labels(label("agent", agent), label("rule", rule)).inc(n)

    # --- exposing ------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric, and its content type."""
        return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE_LATEST

    def start(self, interval_s: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval_s`` from a daemon thread until :meth:`close`."""
        if self._ticker is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.tick()
                except Exception:  # pragma: no cover - never let the ticker die
                    log.exception("metrics tick failed")

        self._ticker = threading.Thread(target=run, name="proctor-metrics-tick", daemon=True)
        self._ticker.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.join(timeout_s)


class _WithoutCreated:
    """The registry minus the ``*_created`` series prometheus_client adds to every counter and
    histogram child: they double the series count and Prometheus ignores them in this format.
    (``disable_created_metrics()`` would do it for the whole process, the SDK's metrics too.)"""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self.registry.collect():  # fresh Metric objects each scrape: safe to trim
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class _ApprovalCollector:
    """Reads the approval queue at scrape time: pending count, oldest pending age, and the wait
    of every approval decided since the previous scrape.

    Two queries: an aggregate over pending rows (the (status, requested_ns) index), and the rows
    with ``decided_ns`` past a watermark. The watermark (the newest ``decided_ns`` observed,
    starting at construction) makes each decision count once. A database error skips the
    gauges for that scrape and is logged once until the database answers again.
    """

    def __init__(self, engine: Engine, clock: Callable[[], int]) -> None:
        self.engine = engine
        self._clock = clock
        self._lock = threading.Lock()  # concurrent scrapes must not both observe a decision
        self.watermark_ns = clock()
        self.wait = Histogram("proctor_approval_wait_seconds", "Approvals decided: request to human decision",
                              buckets=APPROVAL_WAIT_BUCKETS, registry=None)
        self._failing = False

    def describe(self) -> list[Metric]:
        return [
            GaugeMetricFamily("proctor_approvals_pending", "Approvals waiting for a human"),
            GaugeMetricFamily("proctor_approval_oldest_pending_seconds", "Age of the oldest pending approval"),
            *self.wait.describe(),
        ]

    def collect(self) -> Iterable[Metric]:
        gauges = self._read()
        if gauges is not None:
            pending, oldest_age_s = gauges
            g = GaugeMetricFamily("proctor_approvals_pending", "Approvals waiting for a human")
            g.add_metric([], float(pending))
            yield g
            age = GaugeMetricFamily("proctor_approval_oldest_pending_seconds", "Age of the oldest pending approval")
            age.add_metric([], oldest_age_s)
            yield age
        yield from self.wait.collect()

    def _read(self) -> tuple[int, float] | None:
        """(pending count, oldest pending age in seconds), observing new waits; None on a DB error."""
        c = approvals_t.c
        with self._lock:
            now = self._clock()
            try:
                with self.engine.connect() as conn:
                    pending, oldest = conn.execute(
                        select(func.count(), func.min(c.requested_ns)).where(c.status == "pending", c.expires_ns > now)
                    ).one()
                    decided = conn.execute(
                        select(c.decided_ns, c.requested_ns).where(c.decided_ns > self.watermark_ns)
                    ).all()
            except Exception as exc:
                if not self._failing:
                    log.warning("metrics: cannot read the approval queue, skipping its gauges: %s", exc)
                self._failing = True
                return None
            self._failing = False
            for decided_ns, requested_ns in decided:
                self.wait.observe(max(0, int(decided_ns) - int(requested_ns)) / 1e9)
                self.watermark_ns = max(self.watermark_ns, int(decided_ns))
        return int(pending or 0), (max(0, now - int(oldest)) / 1e9 if oldest is not None else 0.0)
