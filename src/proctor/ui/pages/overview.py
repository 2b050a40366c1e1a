"""The overview: what is happening now, updated live over server-sent events.

``/`` and ``/overview.json`` show one snapshot; ``/live/overview`` streams a fresh one (the same
JSON) whenever spans are durably written or the decision log grows, at most about four a second,
and otherwise when a poll finds something different (approvals, alerts, the windows sliding).

The snapshot is a handful of small, indexed queries (see :class:`OverviewQueries`), made once per
change for every open browser by the page's :class:`~proctor.ui.live.SnapshotHub`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import Connection, Engine, case, func, select
from starlette.concurrency import run_in_threadpool

from proctor.core.timeparse import format_ns
from proctor.store.alerts import AlertStore
from proctor.store.approvals import ApprovalStore
from proctor.store.schema import alerts as alerts_t
from proctor.store.schema import approvals as approvals_t
from proctor.store.schema import decisions as decisions_t
from proctor.store.schema import spans as spans_t
from proctor.store.schema import traces as traces_t
from proctor.telemetry.metrics import ProctorMetrics
from proctor.ui import live
from proctor.ui.render import page, principal_of

router = APIRouter(tags=["console"])

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HEADLINE_WINDOW_NS = 24 * 3600 * NS  # the headline cards: the last 24 hours
WINDOW_MIN = 60  # cost per minute and decisions by effect: the last hour
LIST_SIZE = 8  # rows in each short list (live sessions, approvals, alerts)
#: Effects in the order the decisions chart shows them (policy.model.EFFECTS, most permissive first).
EFFECTS = ("allow", "warn", "redact", "require_approval", "deny", "terminate_session")
_USAGE_KINDS = ("llm", "embedding")  # only model calls carry cost (agent spans repeat their sums)
# The binary search for the first decision of the window assumes ts_ns grows with seq; appends
# from several processes can be out of order by a little, so start this many seqs earlier.
_SEQ_MARGIN = 1000


class OverviewQueries:
    """Builds the overview snapshot for one server. Thread-safe (the page and the hub share it)."""

    def __init__(self, engine: Engine, metrics: ProctorMetrics | None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.approvals = ApprovalStore(engine)
        self.alerts = AlertStore(engine)
        self._seq_floor: int | None = None  # no decision of any later window has a lower seq
        self._lock = threading.Lock()

    def snapshot(self, now_ns: int | None = None) -> dict[str, Any]:
        now = time.time_ns() if now_ns is None else now_ns
        window_start = (now // MINUTE_NS - (WINDOW_MIN - 1)) * MINUTE_NS  # whole minutes, this one last
        with self.engine.connect() as conn:
            headline = self._headline(conn, now)
            cost = self._cost_per_minute(conn, window_start)
            decisions = self._decisions(conn, window_start)
            sessions = self._live_sessions(conn, now)
            oldest = self._oldest_approvals(conn, now)
            firing = int(conn.execute(
                select(func.count()).select_from(alerts_t).where(alerts_t.c.status == "firing")).scalar_one())
        pending = self.approvals.pending_count()
        alerts = [{"id": a.id, "rule_id": a.rule_id, "severity": a.severity, "summary": a.summary,
                   "value": a.value, "since_ns": a.fired_ns or a.started_ns, "action": a.action}
                  for a in self.alerts.list(status="firing", limit=LIST_SIZE)] if firing else []
        return {
            "active": "overview",
            "now_ns": now,
            "now": format_ns(now),
            "headline": headline,
            "cost_per_minute": cost,
            "decisions": decisions,
            "live_sessions": sessions,
            "approvals": {"pending": pending, "oldest": oldest},
            "alerts": {"firing": firing, "items": alerts},
        }

    # --- parts ----------------------------------------------------------------------------------

    def _headline(self, conn: Connection, now: int) -> dict[str, Any]:
        t = traces_t.c
        row = conn.execute(select(
            func.count(),
            func.coalesce(func.sum(t.span_count), 0),
            func.coalesce(func.sum(case((t.error_count > 0, 1), else_=0)), 0),
            func.coalesce(func.sum(t.error_count), 0),
            func.coalesce(func.sum(t.cost_usd), 0.0),
            func.coalesce(func.sum(t.input_tokens + t.output_tokens), 0),
        ).where(t.start_ns >= now - HEADLINE_WINDOW_NS)).one()
        return {"window": "24h", "traces": int(row[0]),
                "spans": int(row[1]), "error_traces": int(row[2]), "error_spans": int(row[3]),
                "cost_usd": float(row[4]), "tokens": int(row[5])}

    def _cost_per_minute(self, conn: Connection, start: int) -> dict[str, Any]:
        """Model cost by the minute its call ended, over the window. Spans are found through the
        ingest-time index (a span is ingested after it ends), then bucketed by their end time."""
        s = spans_t.c
        bucket = ((s.end_ns - start) // MINUTE_NS).label("bucket")
        rows = conn.execute(
            select(bucket, func.sum(s.cost_usd), func.count())
            .where(s.ingested_ns >= start, s.end_ns >= start, s.kind.in_(_USAGE_KINDS), s.cost_usd.is_not(None))
            .group_by(bucket)
        ).all()
        costs = [0.0] * WINDOW_MIN
        calls = [0] * WINDOW_MIN
        for b, usd, n in rows:
            i = min(max(int(b), 0), WINDOW_MIN - 1)  # a clock ahead of ours counts as this minute
            costs[i] += float(usd or 0.0)
            calls[i] += int(n)
        return {
            "minutes": WINDOW_MIN, "start_ns": start, "step_ns": MINUTE_NS,
            "cost_usd": [round(c, 9) for c in costs], "calls": calls,
            "total_usd": round(sum(costs), 9), "max_usd": max(costs),
        }

    def _decisions(self, conn: Connection, start: int) -> dict[str, Any]:
        d = decisions_t.c
        floor = self._floor(conn, start)
        # read the window through the primary key (seq >= floor), not through ix_decisions_effect, which
        # SQLite would pick for the GROUP BY and which walks the whole log; the ORDER BY keeps it so
        window = select(d.effect, d.seq).where(d.seq >= floor, d.ts_ns >= start).order_by(d.seq).subquery()
        rows = conn.execute(
            select(window.c.effect, func.count(), func.min(window.c.seq)).group_by(window.c.effect)
        ).all()
        counts = {str(effect): int(n) for effect, n, _ in rows}
        if rows:
            self._raise_floor(min(int(lo) for _, _, lo in rows))
        else:  # nothing in the window: every row so far is older than any later window
            top = conn.execute(select(func.max(d.seq))).scalar()
            if top is not None:
                self._raise_floor(int(top) + 1)
        order = list(EFFECTS) + sorted(e for e in counts if e not in EFFECTS)
        return {"minutes": WINDOW_MIN, "since_ns": start, "total": sum(counts.values()),
                "by_effect": [{"effect": e, "count": counts.get(e, 0)} for e in order]}

    def _floor(self, conn: Connection, start: int) -> int:
        """A seq at or below the first decision at/after ``start``: found once by binary search on
        the primary key, then raised as the window moves, so each snapshot reads only the window."""
        with self._lock:
            if self._seq_floor is not None:
                return self._seq_floor
        d = decisions_t.c
        lo, hi = conn.execute(select(func.min(d.seq), func.max(d.seq))).one()
        if lo is None:
            return 0  # an empty log: no floor to remember yet
        lo, hi = int(lo), int(hi) + 1
        for _ in range(64):  # bounded: log2 of any seq range
            if lo >= hi:
                break
            mid = (lo + hi) // 2
            ts = conn.execute(select(d.ts_ns).where(d.seq >= mid).order_by(d.seq).limit(1)).scalar()
            if ts is None or int(ts) >= start:
                hi = mid
            else:
                lo = mid + 1
        floor = max(0, lo - _SEQ_MARGIN)
        self._raise_floor(floor)
        return floor

    def _raise_floor(self, seq: int) -> None:
        with self._lock:
            if self._seq_floor is None or seq > self._seq_floor:
                self._seq_floor = seq

    def _live_sessions(self, conn: Connection, now: int) -> dict[str, Any]:
        """Sessions with a span in the last ``session_idle_s`` (what ProctorMetrics counts as
        active), their totals so far from the traces table."""
        if self.metrics is None:
            return {"count": 0, "idle_s": None, "cost_usd": 0.0, "items": []}
        active = self.metrics.active_sessions()
        active.sort(key=lambda r: r[2], reverse=True)  # most recently seen first
        top = active[:LIST_SIZE]
        items: list[dict[str, Any]] = []
        if top:
            t = traces_t.c
            totals = {r.session_id: r for r in conn.execute(
                select(t.session_id, func.min(t.start_ns).label("start_ns"), func.max(t.end_ns).label("end_ns"),
                       func.count().label("traces"), func.sum(t.span_count).label("spans"),
                       func.sum(t.error_count).label("errors"), func.sum(t.cost_usd).label("cost_usd"),
                       func.max(t.agent_name).label("agent"))
                .where(t.session_id.in_([sid for sid, _, _, _ in top])).group_by(t.session_id))}
            for sid, agent, seen_ns, cost in top:
                r = totals.get(sid)
                start = int(r.start_ns) if r is not None else None
                end = int(r.end_ns) if r is not None else None
                items.append({
                    "session_id": sid, "agent": (r.agent if r is not None else None) or agent,
                    "start_ns": start, "last_ns": end, "seen_ns": seen_ns,
                    "duration_ms": (end - start) / 1e6 if start is not None and end is not None else None,
                    "traces": int(r.traces) if r is not None else 0,
                    "spans": int(r.spans or 0) if r is not None else 0,
                    "errors": int(r.errors or 0) if r is not None else 0,
                    "cost_usd": float(r.cost_usd or 0.0) if r is not None else cost,
                })
        return {"count": len(active), "idle_s": self.metrics.session_idle_s,
                "cost_usd": sum(i["cost_usd"] for i in items), "items": items}

    def _oldest_approvals(self, conn: Connection, now: int) -> list[dict[str, Any]]:
        """The approvals waiting longest (ApprovalStore.list is newest first)."""
        a = approvals_t.c
        rows = conn.execute(
            select(a.id, a.tool, a.agent, a.session_id, a.message, a.requested_ns, a.expires_ns)
            .where(a.status == "pending", a.expires_ns > now).order_by(a.requested_ns, a.id).limit(LIST_SIZE)
        ).all()
        return [{"id": r.id, "tool": r.tool, "agent": r.agent, "session_id": r.session_id, "message": r.message,
                 "requested_ns": int(r.requested_ns), "expires_ns": int(r.expires_ns)} for r in rows]


def same_view(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two snapshots show the same thing: equal but for the clock (the page ticks ages itself)."""
    return {k: v for k, v in a.items() if k not in ("now_ns", "now")} == \
        {k: v for k, v in b.items() if k not in ("now_ns", "now")}


_make_lock = threading.Lock()


def queries(request: Request) -> OverviewQueries:
    app = request.app
    with _make_lock:
        found: OverviewQueries | None = getattr(app.state, "overview_queries", None)
        if found is None:
            state = app.state.proctor
            found = app.state.overview_queries = OverviewQueries(state.engine, state.metrics)
        return found


def overview_hub(request: Request) -> live.SnapshotHub:
    """The app's overview hub: made on first use, told of every durable span batch and every new
    decision-log row."""
    app = request.app

    def make() -> live.SnapshotHub:
        q = queries(request)
        h = live.SnapshotHub(q.snapshot, same=same_view)
        state = app.state.proctor
        state.pipeline.subscribe(h.changed)
        if state.decisions is not None:
            state.decisions.subscribe(h.changed)
        return h

    return live.hub(app, "overview", make)


@page(router, "/", "overview.html", json_path="/overview.json")
def overview(request: Request) -> dict[str, Any]:
    return queries(request).snapshot()


@router.get("/live/overview", include_in_schema=False, response_model=None)
async def live_overview(request: Request) -> Response:
    """Server-sent events: the overview snapshot (as /overview.json) each time it changes."""
    who = principal_of(request)
    cache = request.app.state.proctor.auth

    async def allowed() -> bool:
        keys = cache.fresh()
        if keys is None:
            keys = await run_in_threadpool(cache.load)
        # a key's stream lasts while the key does; a stream opened while auth was off, while it stays off
        return (who.key_id in keys) if who.key_id else not keys

    return live.EventStream(overview_hub(request), allowed)
