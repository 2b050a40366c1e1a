"""Writing spans and reading them back.

Writes are the ingest hot path, so they bypass SQL compilation: the spans go in with one
``executemany`` of a prepared INSERT (SQLite) or one COPY into a staging table (PostgreSQL),
then one upsert of the per-trace aggregates, all in the caller's transaction.
Reads use SQLAlchemy Core expressions so the same code serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, case, exists, func, or_, select
from sqlalchemy.exc import DBAPIError

from proctor.core import Span, SpanKind, SpanStatus
from proctor.store.schema import decisions as decisions_t
from proctor.store.schema import spans as spans_t
from proctor.store.schema import traces as traces_t

SPAN_COLUMNS: tuple[str, ...] = tuple(c.name for c in spans_t.columns)
TRACE_COLUMNS: tuple[str, ...] = tuple(c.name for c in traces_t.columns)
# Columns a list view needs; the heavy text (attributes, events, messages) stays on disk.
SPAN_SUMMARY_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "duration_ns",
    "status", "status_message", "service_name", "session_id", "agent_name", "agent_version", "model",
    "provider", "input_tokens", "output_tokens", "cost_usd", "tool_name", "tool_call_id",
    "tool_calls", "error_type", "error_message", "links",
)
_USAGE_KINDS = frozenset({SpanKind.LLM.value, SpanKind.EMBEDDING.value})
_dumps = orjson.dumps


def _json(value: Any) -> str:
    return _dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def _no_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold NUL characters. Replace them (U+FFFD) in the plain text
    columns; the raw attributes keep them, JSON-escaped. Used only after PostgreSQL refused a
    batch, so the common path pays nothing."""
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) and "\x00" in v else v for v in row)


def span_row(s: Span, ingested_ns: int, resource_json: dict[int, str] | None = None) -> tuple[Any, ...]:
    """The row tuple for ``s``, in ``SPAN_COLUMNS`` order.

    ``resource_json`` caches the serialized resource by identity: every span of one OTLP
    ResourceSpans shares the same dict, and serializing it once per batch instead of once
    per span is a measurable share of the write path.
    """
    res = s.resource
    if resource_json is None:
        res_text = _json(res)
    else:
        res_text = resource_json.get(id(res))  # type: ignore[assignment]
        if res_text is None:
            res_text = resource_json[id(res)] = _json(res)
    return (
        s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.otel_kind, s.start_ns, s.end_ns,
        s.end_ns - s.start_ns, s.status, s.status_message, s.service_name, s.scope_name, s.dialect,
        s.operation, s.session_id, s.user_id, s.agent_name, s.agent_id, s.agent_version,
        s.agent_version_hash, s.model, s.request_model, s.provider, s.input_tokens, s.output_tokens,
        s.cache_read_tokens, s.cache_write_tokens, s.reasoning_tokens, s.cost_usd, s.cost_source,
        s.tool_name, s.tool_call_id, s.tool_arguments, s.tool_result,
        _json([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in s.tool_calls])
        if s.tool_calls else None,
        s.input_value, s.output_value, s.error_type, s.error_message,
        _json(s.attributes), res_text, _json(s.events) if s.events else "[]",
        _json(s.links) if s.links else "[]", ingested_ns,
    )


@dataclass(slots=True)
class _TraceAgg:
    """Per-trace totals for one batch; merged into ``traces`` by an upsert."""

    trace_id: str
    start_ns: int
    end_ns: int
    root_span_id: str | None = None
    root_name: str | None = None
    service_name: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    agent_name: str | None = None
    agent_version: str | None = None
    span_count: int = 0
    error_count: int = 0
    llm_count: int = 0
    tool_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    root_start_ns: int = 0  # the root is the parentless span that started first

    def add(self, s: Span) -> None:
        self.span_count += 1
        if s.start_ns < self.start_ns:
            self.start_ns = s.start_ns
        if s.end_ns > self.end_ns:
            self.end_ns = s.end_ns
        if s.parent_span_id is None:
            # several parentless spans (a span an alert adds later to the trace it contained, a
            # producer's stray span): the one that started first names the trace
            if self.root_span_id is None or s.start_ns < self.root_start_ns:
                self.root_span_id, self.root_name, self.root_start_ns = s.span_id, s.name, s.start_ns
        elif self.root_name is None:
            self.root_name = s.name  # provisional until the root arrives
        self.service_name = self.service_name or s.service_name
        self.session_id = self.session_id or s.session_id
        self.user_id = self.user_id or s.user_id
        if s.agent_name and (self.agent_name is None or s.span_id == self.root_span_id):
            self.agent_name = s.agent_name
            self.agent_version = s.agent_version or self.agent_version
        if s.status == "error":
            self.error_count += 1
        kind = s.kind
        if kind == "tool":
            self.tool_count += 1
        elif kind in _USAGE_KINDS:
            # Only model calls count toward totals: agent spans often repeat their children's
            # usage as a sum, and adding both would double it.
            self.llm_count += 1
            self.input_tokens += s.input_tokens or 0
            self.output_tokens += s.output_tokens or 0
            self.cost_usd += s.cost_usd or 0.0

    def row(self, now_ns: int) -> tuple[Any, ...]:
        return (
            self.trace_id, self.start_ns, self.end_ns, self.end_ns - self.start_ns, self.root_span_id,
            self.root_name, self.service_name, self.session_id, self.user_id, self.agent_name,
            self.agent_version, self.span_count, self.error_count, self.llm_count, self.tool_count,
            self.input_tokens, self.output_tokens, self.cost_usd, now_ns,
        )


def aggregate_traces(batch: Iterable[Span]) -> dict[str, _TraceAgg]:
    aggs: dict[str, _TraceAgg] = {}
    for s in batch:
        agg = aggs.get(s.trace_id)
        if agg is None:
            agg = aggs[s.trace_id] = _TraceAgg(s.trace_id, s.start_ns, s.end_ns)
        agg.add(s)
    return aggs


def _placeholders(dialect: str, n: int) -> str:
    return ", ".join(["?" if dialect == "sqlite" else "%s"] * n)


def _sql_for(dialect: str) -> dict[str, str]:
    lo, hi = ("MIN", "MAX") if dialect == "sqlite" else ("LEAST", "GREATEST")
    insert_spans = (
        f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({_placeholders(dialect, len(SPAN_COLUMNS))})"
    )
    insert_spans = (
        insert_spans.replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
        if dialect == "sqlite"
        else insert_spans + " ON CONFLICT DO NOTHING"
    )
    values = f"INSERT INTO traces ({', '.join(TRACE_COLUMNS)}) VALUES ({_placeholders(dialect, len(TRACE_COLUMNS))})"
    # a batch's root replaces the stored one only if it started no later than anything stored:
    # a root arriving after its children does; a parentless span added later (an alert's) does not
    new_root = ("excluded.root_span_id IS NOT NULL AND (traces.root_span_id IS NULL"
                " OR excluded.start_ns <= traces.start_ns)")
    merge = (
        values
        + " ON CONFLICT (trace_id) DO UPDATE SET"
        f" start_ns = {lo}(traces.start_ns, excluded.start_ns),"
        f" end_ns = {hi}(traces.end_ns, excluded.end_ns),"
        f" duration_ns = {hi}(traces.end_ns, excluded.end_ns) - {lo}(traces.start_ns, excluded.start_ns),"
        f" root_span_id = CASE WHEN {new_root} THEN excluded.root_span_id ELSE traces.root_span_id END,"
        f" root_name = CASE WHEN {new_root} THEN excluded.root_name"
        " WHEN traces.root_span_id IS NOT NULL THEN traces.root_name"
        " ELSE COALESCE(traces.root_name, excluded.root_name) END,"
        " service_name = COALESCE(traces.service_name, excluded.service_name),"
        " session_id = COALESCE(traces.session_id, excluded.session_id),"
        " user_id = COALESCE(traces.user_id, excluded.user_id),"
        f" agent_name = CASE WHEN {new_root} AND excluded.agent_name IS NOT NULL"
        " THEN excluded.agent_name ELSE COALESCE(traces.agent_name, excluded.agent_name) END,"
        " agent_version = COALESCE(traces.agent_version, excluded.agent_version),"
        " span_count = traces.span_count + excluded.span_count,"
        " error_count = traces.error_count + excluded.error_count,"
        " llm_count = traces.llm_count + excluded.llm_count,"
        " tool_count = traces.tool_count + excluded.tool_count,"
        " input_tokens = traces.input_tokens + excluded.input_tokens,"
        " output_tokens = traces.output_tokens + excluded.output_tokens,"
        " cost_usd = traces.cost_usd + excluded.cost_usd,"
        " updated_ns = excluded.updated_ns"
    )
    out = {"insert_spans": insert_spans, "merge_traces": merge}
    if dialect == "postgresql":
        cols = ", ".join(SPAN_COLUMNS)
        out["stage_spans"] = (
            "CREATE TEMP TABLE IF NOT EXISTS spans_stage (LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        out["copy_spans"] = f"COPY spans_stage ({cols}) FROM STDIN"
        out["insert_staged"] = (
            f"INSERT INTO spans ({cols}) SELECT {cols} FROM spans_stage ON CONFLICT DO NOTHING"
        )
    return out


@dataclass(slots=True)
class WriteResult:
    inserted: int
    duplicates: int


_last_ingest_ns = 0
_ingest_lock = threading.Lock()


def _ingest_stamp() -> int:
    """A nanosecond timestamp unique to one write call in this process (strictly increasing)."""
    global _last_ingest_ns
    with _ingest_lock:
        now = max(time.time_ns(), _last_ingest_ns + 1)
        _last_ingest_ns = now
        return now


def _copy_insert(conn: Connection, rows: list[tuple[Any, ...]], sql: dict[str, str]) -> int:
    """PostgreSQL: COPY the rows into a per-session staging table, then one INSERT ... SELECT
    ... ON CONFLICT DO NOTHING. psycopg's COPY formats rows in C; executemany dumps each
    parameter in Python (about half the client CPU per span, measured with benchmarks/ingest.py)."""
    dbapi = conn.connection.driver_connection
    base_error = conn.dialect.loaded_dbapi.Error
    try:
        with dbapi.cursor() as cur:  # type: ignore[union-attr]
            cur.execute(sql["stage_spans"])
            with cur.copy(sql["copy_spans"]) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(sql["insert_staged"])
            inserted = cur.rowcount
            cur.execute("TRUNCATE spans_stage")
    except base_error as exc:
        # the driver was used directly: raise what SQLAlchemy would (DataError, OperationalError, ...)
        raise DBAPIError.instance(sql["copy_spans"], None, exc, base_error) from exc
    return inserted if inserted is not None and inserted >= 0 else -1


def write_spans(
    conn: Connection, batch: Sequence[Span], sql: dict[str, str], *, strip_nul: bool = False
) -> WriteResult:
    """Insert ``batch`` and fold it into the trace aggregates, inside the caller's transaction.

    Idempotent on (trace_id, span_id): a span already stored is skipped. Every row of one call
    carries the same, call-unique ``ingested_ns``; when some spans of the batch were already
    stored, that stamp tells which rows this call inserted, and only those are added to the
    trace aggregates, so a retried batch never counts twice and costs no more than a new one.
    """
    if not batch:
        return WriteResult(0, 0)
    now = _ingest_stamp()
    resources: dict[int, str] = {}
    rows = [span_row(s, now, resources) for s in batch]
    if strip_nul:
        rows = [_no_nul(r) for r in rows]
    if "copy_spans" in sql:
        inserted = _copy_insert(conn, rows, sql)
    else:
        cur = conn.exec_driver_sql(sql["insert_spans"], rows)
        inserted = cur.rowcount if cur.rowcount is not None and cur.rowcount >= 0 else -1
    if inserted == len(batch):
        fresh: Sequence[Span] = batch
    else:
        new_keys = {
            (r.trace_id, r.span_id)
            for r in conn.execute(
                select(spans_t.c.trace_id, spans_t.c.span_id).where(spans_t.c.ingested_ns == now)
            )
        }
        # a span repeated inside the batch is inserted once: keep its first occurrence only
        kept = []
        for s in batch:
            key = (s.trace_id, s.span_id)
            if key in new_keys:
                new_keys.discard(key)
                kept.append(s)
        fresh = kept
        inserted = len(fresh)
    if fresh:
        trace_rows = [a.row(now) for a in aggregate_traces(fresh).values()]
        if strip_nul:
            trace_rows = [_no_nul(r) for r in trace_rows]
        conn.exec_driver_sql(sql["merge_traces"], trace_rows)
    return WriteResult(inserted, len(batch) - inserted)


# ---------------------------------------------------------------------------------------------
# Reading


class CursorError(ValueError):
    """A pagination cursor that this server did not issue."""


def encode_cursor(start_ns: int, key: str) -> str:
    return base64.urlsafe_b64encode(f"{start_ns}:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        start, key = raw.split(":", 1)
        return int(start), key
    except Exception as exc:
        raise CursorError(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page") from exc


#: What ``TraceFilter.decision`` takes: an effect, or "any" (any effect but allow).
DECISION_FILTERS = ("any", "deny", "terminate_session", "require_approval", "redact", "warn")


@dataclass(slots=True)
class TraceFilter:
    """Filters a user can put on the trace list. Every field is optional."""

    since_ns: int | None = None
    until_ns: int | None = None
    agent: str | None = None
    version: str | None = None  # agent version label or version hash
    status: str | None = None  # "ok" or "error"
    tool: str | None = None
    model: str | None = None
    session_id: str | None = None
    service: str | None = None
    min_cost_usd: float | None = None
    min_duration_ms: float | None = None
    text: str | None = None  # free text over span names and raw attributes
    # an enforced policy decision with this effect was made in the trace ("any": any but allow)
    decision: str | None = None

    def clauses(self) -> list[Any]:
        t, s = traces_t.c, spans_t.c
        out: list[Any] = []

        def any_span(*cond: Any) -> Any:
            return exists().where(s.trace_id == t.trace_id, *cond)

        if self.since_ns is not None:
            out.append(t.start_ns >= self.since_ns)
        if self.until_ns is not None:
            out.append(t.start_ns < self.until_ns)
        if self.agent:
            out.append(or_(t.agent_name == self.agent, any_span(s.agent_name == self.agent)))
        if self.version:
            out.append(any_span(or_(s.agent_version == self.version, s.agent_version_hash == self.version)))
        if self.status == SpanStatus.ERROR.value:
            out.append(t.error_count > 0)
        elif self.status == SpanStatus.OK.value:
            out.append(t.error_count == 0)
        if self.tool:
            out.append(any_span(s.tool_name == self.tool))
        if self.model:
            out.append(any_span(or_(s.model == self.model, s.request_model == self.model)))
        if self.session_id:
            out.append(t.session_id == self.session_id)
        if self.service:
            out.append(t.service_name == self.service)
        if self.min_cost_usd is not None:
            out.append(t.cost_usd >= self.min_cost_usd)
        if self.min_duration_ms is not None:
            # clamped: a huge minimum (1e20 ms) matches nothing, not an integer overflow in the database
            at_least = self.min_duration_ms * 1_000_000
            out.append(t.duration_ns >= (int(at_least) if at_least < 2**63 else 2**63 - 1))  # inf, nan too
        if self.decision:
            d = decisions_t.c
            effect = d.effect != "allow" if self.decision == "any" else d.effect == self.decision
            out.append(exists().where(d.trace_id == t.trace_id, d.enforced.is_(True), effect))
        if self.text:
            pattern = "%" + self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            out.append(
                or_(
                    t.root_name.ilike(pattern, escape="\\"),
                    any_span(
                        or_(
                            s.name.ilike(pattern, escape="\\"),
                            s.attributes.ilike(pattern, escape="\\"),
                            s.error_message.ilike(pattern, escape="\\"),
                        )
                    ),
                )
            )
        return out


@dataclass(slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _row_dict(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row._mapping.items()}


def _dicts(result: Any) -> list[dict[str, Any]]:
    """All rows of ``result`` as plain dicts with plain ``str`` keys. Cheaper than a mapping per
    Row: a 20,000-span trace reads in about half the time."""
    keys = [str(k) for k in result.keys()]  # noqa: SIM118 - a SQLAlchemy result, not a dict
    return [dict(zip(keys, row, strict=True)) for row in result]


def decode_span_row(d: dict[str, Any]) -> dict[str, Any]:
    """Turn a stored span row into the API's dict: JSON columns parsed back."""
    for key in ("attributes", "resource", "events", "links", "tool_calls"):
        if key in d:
            value = d[key]
            d[key] = orjson.loads(value) if value else ([] if key != "attributes" and key != "resource" else {})
    return d


class SpanStore:
    """The spans and traces tables of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.sql = _sql_for(self.dialect)

    # -- writes -----------------------------------------------------------------------------
    def write(self, batch: Sequence[Span]) -> WriteResult:
        with self.engine.begin() as conn:
            return write_spans(conn, batch, self.sql)

    # -- reads ------------------------------------------------------------------------------
    def list_traces(self, flt: TraceFilter | None = None, *, limit: int = 50, cursor: str | None = None) -> Page:
        flt = flt or TraceFilter()
        t = traces_t.c
        q = select(traces_t).where(*flt.clauses())
        if cursor:
            c_start, c_id = decode_cursor(cursor)
            q = q.where(or_(t.start_ns < c_start, and_(t.start_ns == c_start, t.trace_id < c_id)))
        q = q.order_by(t.start_ns.desc(), t.trace_id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = _dicts(conn.execute(q))
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = encode_cursor(rows[-1]["start_ns"], rows[-1]["trace_id"])
        return Page(rows, nxt)

    def get_trace_summary(self, trace_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(traces_t).where(traces_t.c.trace_id == trace_id)).first()
        return _row_dict(row) if row else None

    def trace_spans(self, trace_id: str, *, full: bool = False) -> list[dict[str, Any]]:
        cols = SPAN_COLUMNS if full else SPAN_SUMMARY_COLUMNS
        q = (
            select(*[spans_t.c[c] for c in cols])
            .where(spans_t.c.trace_id == trace_id)
            .order_by(spans_t.c.start_ns, spans_t.c.span_id)
        )
        with self.engine.connect() as conn:
            return [decode_span_row(d) for d in _dicts(conn.execute(q))]

    def get_span(self, span_id: str, trace_id: str | None = None) -> dict[str, Any] | None:
        q = select(spans_t).where(spans_t.c.span_id == span_id)
        if trace_id:
            q = q.where(spans_t.c.trace_id == trace_id)
        with self.engine.connect() as conn:
            row = conn.execute(q.limit(1)).first()
        return decode_span_row(_row_dict(row)) if row else None

    def find_span_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """(trace_id, span_id) pairs whose span id starts with ``prefix``; for short ids in the CLI."""
        q = select(spans_t.c.trace_id, spans_t.c.span_id).where(spans_t.c.span_id.like(prefix + "%")).limit(5)
        with self.engine.connect() as conn:
            return [(r.trace_id, r.span_id) for r in conn.execute(q)]

    def find_trace_prefix(self, prefix: str) -> list[str]:
        q = select(traces_t.c.trace_id).where(traces_t.c.trace_id.like(prefix + "%")).limit(5)
        with self.engine.connect() as conn:
            return [r.trace_id for r in conn.execute(q)]

    def list_sessions(
        self, flt: TraceFilter | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """Sessions (conversations), derived from the traces that carry a session id."""
        flt = flt or TraceFilter()
        t = traces_t.c
        last = func.max(t.start_ns).label("last_start_ns")
        q = (
            select(
                t.session_id,
                func.min(t.start_ns).label("start_ns"),
                func.max(t.end_ns).label("end_ns"),
                last,
                func.count().label("trace_count"),
                func.sum(t.span_count).label("span_count"),
                func.sum(t.error_count).label("error_count"),
                func.sum(t.input_tokens).label("input_tokens"),
                func.sum(t.output_tokens).label("output_tokens"),
                func.sum(t.cost_usd).label("cost_usd"),
                func.max(t.agent_name).label("agent_name"),
                func.max(t.user_id).label("user_id"),
            )
            .where(t.session_id.is_not(None), *flt.clauses())
            .group_by(t.session_id)
        )
        if cursor:
            c_start, c_id = decode_cursor(cursor)
            q = q.having(or_(last < c_start, and_(last == c_start, t.session_id < c_id)))
        q = q.order_by(last.desc(), t.session_id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = _dicts(conn.execute(q))
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = encode_cursor(rows[-1]["last_start_ns"], rows[-1]["session_id"])
        return Page(rows, nxt)

    def session_traces(self, session_id: str) -> list[dict[str, Any]]:
        q = select(traces_t).where(traces_t.c.session_id == session_id).order_by(traces_t.c.start_ns)
        with self.engine.connect() as conn:
            return _dicts(conn.execute(q))

    def stats(self, flt: TraceFilter | None = None) -> dict[str, Any]:
        """Counts, cost, tokens and duration percentiles, overall, by agent and by tool.

        Sums and counts are computed by the database (GROUP BY); each percentile is one
        ORDER BY ... OFFSET query, so nothing proportional to the data is pulled into Python.
        """
        flt = flt or TraceFilter()
        t, s = traces_t.c, spans_t.c
        clauses = flt.clauses()
        tool_scope = [s.kind == "tool", s.tool_name.is_not(None)]
        if clauses:
            tool_scope.append(s.trace_id.in_(select(t.trace_id).where(*clauses)))
        with self.engine.connect() as conn:
            total = conn.execute(
                select(
                    func.count().label("traces"),
                    func.coalesce(func.sum(t.span_count), 0).label("spans"),
                    func.coalesce(func.sum(t.error_count), 0).label("errors"),
                    func.coalesce(func.sum(t.cost_usd), 0.0).label("cost_usd"),
                    func.coalesce(func.sum(t.input_tokens), 0).label("input_tokens"),
                    func.coalesce(func.sum(t.output_tokens), 0).label("output_tokens"),
                ).where(*clauses)
            ).one()
            overall = _percentiles_sql(conn, t.duration_ns, clauses, total.traces)
            by_agent = []
            for r in conn.execute(
                select(
                    t.agent_name, func.count().label("n"),
                    func.sum(case((t.error_count > 0, 1), else_=0)).label("errors"),
                    func.sum(t.cost_usd).label("cost"), func.sum(t.input_tokens).label("tin"),
                    func.sum(t.output_tokens).label("tout"),
                ).where(t.agent_name.is_not(None), *clauses).group_by(t.agent_name)
            ):
                by_agent.append(_group(r.agent_name, r.n, r.errors, r.cost, r.tin, r.tout, _percentiles_sql(
                    conn, t.duration_ns, [t.agent_name == r.agent_name, *clauses], r.n)))
            by_tool = []
            for r in conn.execute(
                select(
                    s.tool_name, func.count().label("n"),
                    func.sum(case((s.status == "error", 1), else_=0)).label("errors"),
                ).where(*tool_scope).group_by(s.tool_name)
            ):
                by_tool.append(_group(r.tool_name, r.n, r.errors, 0.0, 0, 0, _percentiles_sql(
                    conn, s.duration_ns, [s.tool_name == r.tool_name, *tool_scope], r.n)))
        by_agent.sort(key=lambda g: (-g["count"], g["name"]))
        by_tool.sort(key=lambda g: (-g["count"], g["name"]))
        return {
            "traces": total.traces,
            "spans": int(total.spans),
            "errors": int(total.errors),
            "cost_usd": float(total.cost_usd),
            "input_tokens": int(total.input_tokens),
            "output_tokens": int(total.output_tokens),
            "duration_ms": overall,
            "by_agent": by_agent,
            "by_tool": by_tool,
        }


def _group(name: str, n: int, errors: Any, cost: Any, tin: Any, tout: Any, pct: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "count": int(n), "errors": int(errors or 0), "cost_usd": float(cost or 0.0),
        "input_tokens": int(tin or 0), "output_tokens": int(tout or 0), "duration_ms": pct,
    }


def _percentiles_sql(conn: Connection, column: Any, where: list[Any], n: int) -> dict[str, float | None]:
    """Nearest-rank p50/p95 and the max of ``column`` over ``n`` rows matching ``where``:
    always an observed value, no interpolation; one indexed ORDER BY ... OFFSET query each."""
    if not n:
        return {"p50": None, "p95": None, "max": None}

    def at(rank: int) -> float:
        q = select(column).where(*where).order_by(column).offset(rank).limit(1)
        return conn.execute(q).scalar_one() / 1e6

    return {"p50": at(max(0, math.ceil(0.50 * n) - 1)), "p95": at(max(0, math.ceil(0.95 * n) - 1)), "max": at(n - 1)}
