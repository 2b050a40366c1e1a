"""The trace list: ``/traces`` (and ``/traces.json``), filtered and paged like ``GET /api/traces``.

The filters are the API's (``proctor.server.api.filters_from_query`` builds the same TraceFilter) and the
rows are ``proctor.traces.trace_list``'s, plus the models and tools each trace used. Every filter
lives in the query string, so any view of the list is a link. A filter that cannot be read (a bad
time, a negative cost) is shown next to its field, not as an error page; the JSON twin answers it
with 400, as the API does.

The trace detail page (``/traces/{trace_id}``) lives in ``trace_detail.py``.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import Engine, func, select, text

from proctor import traces as views
from proctor.core.timeparse import TimeParseError, parse_duration_s, parse_time_ns
from proctor.server.api import filters_from_query
from proctor.store import CursorError, SpanStore, TraceFilter
from proctor.store.registry import RegistryStore
from proctor.store.schema import decisions as decisions_t
from proctor.store.schema import spans as spans_t
from proctor.store.spans import DECISION_FILTERS
from proctor.ui.render import page, wants_json

router = APIRouter(tags=["console"])

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000  # as the API
QUICK_SINCE = ("15m", "1h", "24h", "7d")
MAX_TEXT = 500  # as the API's q
OPTIONS_TTL_S = 60.0  # the dropdowns' values are read at most once a minute
MAX_OPTIONS = 500

#: The query parameters of the list, as /api/traces names them.
TRACE_PARAMS = ("since", "until", "agent", "version", "status", "tool", "model", "session", "service",
                "min_cost", "min_duration_ms", "q", "decision")
#: the Policy filter's choices: (value, label)
DECISION_CHOICES = (("any", "policy acted (any)"), ("terminate_session", "session stopped"),
                    ("deny", "call denied"), ("require_approval", "held for approval"),
                    ("redact", "content redacted"), ("warn", "warned"))


class FilterErrors(dict[str, str]):
    """Field name -> what is wrong with it."""

    def summary(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.items())


def read_params(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The filters as typed (trimmed strings; absent ones empty), for the form and for links."""
    q = request.query_params
    return {n: (q.get(n) or "").strip() for n in names}


def parse_limit(raw: str | None, errors: FilterErrors) -> int:
    if not raw:
        return DEFAULT_LIMIT
    try:
        n = int(raw)
    except ValueError:
        errors["limit"] = f"not a whole number: {raw!r}"
        return DEFAULT_LIMIT
    if not 1 <= n <= MAX_LIMIT:
        errors["limit"] = f"must be between 1 and {MAX_LIMIT}"
        return DEFAULT_LIMIT
    return n


def check_common(p: dict[str, str], errors: FilterErrors) -> None:
    """The checks /api/traces makes with its parameter types, made here so each failure can be
    shown next to its field."""
    for key in ("since", "until"):
        if p.get(key):
            try:
                parse_time_ns(p[key])
            except TimeParseError as exc:
                errors[key] = str(exc)
    if p.get("status") and p["status"] not in ("ok", "error"):
        errors["status"] = f"must be ok or error, not {p['status']!r}"
    if len(p.get("q") or "") > MAX_TEXT:
        errors["q"] = f"at most {MAX_TEXT} characters"
    if p.get("decision") and p["decision"] not in DECISION_FILTERS:
        errors["decision"] = f"must be one of {', '.join(DECISION_FILTERS)}, not {p['decision']!r}"


def _number(raw: str, what: str, errors: FilterErrors, key: str) -> float | None:
    if not raw:
        return None
    try:
        v = float(raw.lstrip("$"))
    except ValueError:
        errors[key] = f"{what}: not a number: {raw!r}"
        return None
    if not math.isfinite(v) or v < 0:
        errors[key] = f"{what}: must be zero or more"
        return None
    return v


def _duration_ms(raw: str, errors: FilterErrors) -> float | None:
    """Milliseconds: a plain number, or a duration with its unit (250ms, 1.5s, 2m)."""
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        try:
            return parse_duration_s(raw) * 1000
        except ValueError as exc:
            errors["min_duration_ms"] = f"minimum duration: {exc}"
            return None
    if not math.isfinite(v) or v < 0:
        errors["min_duration_ms"] = "minimum duration: must be zero or more"
        return None
    return v


def trace_filter(p: dict[str, str], errors: FilterErrors) -> tuple[TraceFilter | None, float | None]:
    """The TraceFilter for the params (None if any is wrong: ``errors`` says which), and the
    minimum duration in ms as understood."""
    check_common(p, errors)
    min_cost = _number(p["min_cost"], "minimum cost", errors, "min_cost")
    min_ms = _duration_ms(p["min_duration_ms"], errors)
    if errors:
        return None, min_ms
    try:
        flt = filters_from_query(p["since"] or None, p["until"] or None, p["agent"] or None, p["version"] or None,
                       p["status"] or None, p["tool"] or None, p["model"] or None, p["session"] or None,
                       p["service"] or None, min_cost, min_ms, p["q"] or None, p.get("decision") or None)
    except HTTPException as exc:  # the API's own checks, should they ever add one we do not make
        errors["filters"] = str(exc.detail)
        return None, min_ms
    return flt, min_ms


def is_json(request: Request) -> bool:
    return request.url.path.endswith(".json") or wants_json(request)


# --- what the dropdowns offer ----------------------------------------------------------------------

_options_lock = threading.Lock()


def _distinct(engine: Engine, table: str, column: str, limit: int = MAX_OPTIONS) -> list[str]:
    """The distinct non-null values of an indexed column, in order: a loose index scan (one index
    probe per value), so it costs the number of values, not the number of rows."""
    sql = text(
        f"WITH RECURSIVE v(x) AS ("  # table and column: constants of this module
        f" SELECT (SELECT MIN({column}) FROM {table})"
        f" UNION ALL SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > v.x) FROM v WHERE v.x IS NOT NULL"
        f") SELECT x FROM v WHERE x IS NOT NULL LIMIT :limit"
    )
    with engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(sql, {"limit": limit})]


def filter_options(request: Request) -> dict[str, list[Any]]:
    """Known agents, tools, models and versions for the filter dropdowns; cached a minute per app."""
    app = request.app
    now = time.monotonic()
    with _options_lock:
        cached = getattr(app.state, "trace_filter_options", None)
        if cached is not None and now - cached[0] < OPTIONS_TTL_S:
            return cached[1]  # type: ignore[no-any-return]
    engine = app.state.proctor.engine
    try:
        versions = [{"value": v.label or v.short_id, "label": f"{v.name} {v.label or v.short_id}"}
                    for v in RegistryStore(engine).list_versions(limit=200)]
    except Exception:  # a registry problem must not keep the traces from listing
        versions = []
    options: dict[str, list[Any]] = {
        "agents": _distinct(engine, "traces", "agent_name"),
        "tools": _distinct(engine, "spans", "tool_name"),
        "models": _distinct(engine, "spans", "model"),
        "versions": versions,
    }
    with _options_lock:
        app.state.trace_filter_options = (now, options)
    return options


def _with_current(values: list[str], current: str) -> list[str]:
    """The options, plus the value in the URL if it is not among them (so the select shows it)."""
    return values if not current or current in values else [current, *values]


# --- the rows --------------------------------------------------------------------------------------

def models_and_tools(engine: Engine, trace_ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """trace id -> (models called, tools called), for one page of traces (the trace table keeps
    only counts). Reads the spans of those traces through the primary key."""
    if not trace_ids:
        return {}
    s = spans_t.c
    out: dict[str, tuple[list[str], list[str]]] = {t: ([], []) for t in trace_ids}
    with engine.connect() as conn:
        for tid, model in conn.execute(select(s.trace_id, s.model).distinct()
                                       .where(s.trace_id.in_(trace_ids), s.model.is_not(None))):
            out[tid][0].append(model)
        for tid, tool in conn.execute(select(s.trace_id, s.tool_name).distinct()
                                      .where(s.trace_id.in_(trace_ids), s.tool_name.is_not(None))):
            out[tid][1].append(tool)
    for models, tools in out.values():
        models.sort()
        tools.sort()
    return out


def policy_outcomes(engine: Engine, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """trace id -> what policy did in it other than allow: [{effect, rule_id, count}], most
    severe first, for one page of traces (through the decision log's trace index)."""
    if not trace_ids:
        return {}
    d = decisions_t.c
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(select(d.trace_id, d.effect, d.rule_id, func.count())
                            .where(d.trace_id.in_(trace_ids), d.effect != "allow", d.enforced.is_(True))
                            .group_by(d.trace_id, d.effect, d.rule_id))
        for tid, effect, rule_id, n in rows:
            out.setdefault(tid, []).append({"effect": effect, "rule_id": rule_id, "count": int(n)})
    for items in out.values():
        items.sort(key=lambda x: (_SEVERITY.get(x["effect"], 9), x["rule_id"] or ""))
    return out


_SEVERITY = {"terminate_session": 0, "deny": 1, "require_approval": 2, "redact": 3, "warn": 4}


def span_store(request: Request) -> SpanStore:
    return request.app.state.proctor.store  # type: ignore[no-any-return]


@page(router, "/traces", "traces.html")
def traces(request: Request) -> dict[str, Any]:
    p = read_params(request, TRACE_PARAMS)
    errors = FilterErrors()
    limit = parse_limit(request.query_params.get("limit"), errors)
    cursor = request.query_params.get("cursor") or None
    flt, _ = trace_filter(p, errors)
    rows: list[dict[str, Any]] = []
    next_cursor = None
    if flt is not None:
        try:
            listed = views.trace_list(span_store(request), flt, limit=limit, cursor=cursor)
        except CursorError as exc:
            errors["cursor"] = str(exc)
        else:
            rows, next_cursor = listed["traces"], listed["next_cursor"]
            extra = models_and_tools(request.app.state.proctor.engine, [r["trace_id"] for r in rows])
            policy = policy_outcomes(request.app.state.proctor.engine, [r["trace_id"] for r in rows])
            for r in rows:
                r["models"], r["tools"] = extra.get(r["trace_id"], ([], []))
                r["policy"] = policy.get(r["trace_id"], [])
    if errors and is_json(request):
        raise HTTPException(400, errors.summary())
    options = filter_options(request)
    return {
        "active": "traces",
        "filters": p,
        "limit": limit,
        "errors": dict(errors),
        "traces": rows,
        "next_cursor": next_cursor,
        "filtered": any(p.values()),
        "options": {
            "agents": _with_current(options["agents"], p["agent"]),
            "tools": _with_current(options["tools"], p["tool"]),
            "models": _with_current(options["models"], p["model"]),
            "versions": options["versions"],
        },
        "decision_choices": DECISION_CHOICES,
        "quick_since": QUICK_SINCE,
        "page_sizes": PAGE_SIZES,
        "default_limit": DEFAULT_LIMIT,
    }
