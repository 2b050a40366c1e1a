"""The audit page of the console: the decision log's hash chain, verified, and exported.

* ``GET /audit``          — the chain's head, and its verification: run on every page load while
  the log is small enough to check in a fraction of a second (:data:`AUTO_VERIFY_ROWS`), else when
  asked (``?verify=1``, the "Verify now" button). A broken chain names the first bad row, what is
  wrong with it (its content no longer matches its hash, or its link to the row before is
  broken), and every problem found;
* ``GET /audit/export``   — the decisions of a time range (``since``, ``until``: ISO 8601, epoch
  seconds or 15m/2h/7d ago; half-open, [since, until)) as a download, ``format=jsonl`` (one row
  per line, exact) or ``format=csv``. Rows are streamed from the database a chunk at a time, so
  memory stays flat whatever the range. Each row carries ``seq``, ``prev_hash`` and ``hash``: an
  auditor can recompute every row's hash (:func:`proctor.store.decisions.chain_hash`) and follow
  the links from row to row without access to the server.

Verification is :meth:`proctor.store.decisions.DecisionLog.verify`, as ``GET /api/audit/verify``
and ``proctor audit verify`` run it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Engine, select

from proctor.core.timeparse import format_ns, parse_time_ns
from proctor.server.governance import flush_decisions
from proctor.store.decisions import GENESIS_HASH, DecisionLog, chain_hash
from proctor.store.schema import decisions as decisions_t
from proctor.ui.render import page

router = APIRouter(tags=["console"])

#: Verify on every page load up to this many rows (~12 µs a row measured on SQLite: ~0.25 s);
#: beyond it, on request.
AUTO_VERIFY_ROWS = 20_000
EXPORT_CHUNK = 1000
COLUMNS = tuple(str(c.name) for c in decisions_t.columns)  # plain str: orjson refuses subclasses as keys
FORMATS = {"jsonl": ("application/x-ndjson", "jsonl"), "csv": ("text/csv; charset=utf-8", "csv")}


def _row_dict(row: Any) -> dict[str, Any]:
    d = {name: row._mapping[name] for name in COLUMNS}
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):  # a tampered row: keep what is stored
        d["reasons"] = orjson.loads(d["reasons"])
    d["enforced"] = bool(d["enforced"])
    return d


def _row_at(engine: Engine, seq: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(decisions_t).where(decisions_t.c.seq == seq)).first()
    return _row_dict(row) if row is not None else None


def diagnose(engine: Engine, seq: int) -> dict[str, Any]:
    """What is wrong with row ``seq``: its content against its hash, its link to the row before."""
    row = _row_at(engine, seq)
    if row is None:
        return {"seq": seq, "found": False}
    prev = _row_at(engine, seq - 1) if seq > 1 else None
    try:
        recomputed: str | None = chain_hash(row["prev_hash"], seq, row)
    except (KeyError, TypeError, ValueError):
        recomputed = None  # content that cannot even be hashed (reasons no longer a list...)
    expected_prev = GENESIS_HASH if seq == 1 else (prev["hash"] if prev else None)
    return {
        "seq": seq,
        "found": True,
        "row": row,
        "stored_hash": row["hash"],
        "recomputed_hash": recomputed,
        "content_ok": recomputed == row["hash"],
        "prev_hash": row["prev_hash"],
        "previous_row_hash": expected_prev,
        "link_ok": expected_prev is not None and expected_prev == row["prev_hash"],
        "url": (f"/traces/{row['trace_id']}" + (f"?span={row['span_id']}" if row["span_id"] else ""))
        if row["trace_id"] else None,
    }


@page(router, "/audit", "audit.html")
def audit(request: Request, verify: str | None = None) -> dict[str, Any]:
    engine = request.app.state.proctor.engine
    flush_decisions(request)
    log = DecisionLog(engine)
    head_seq, head_hash = log.head()
    first = _row_at(engine, 1) if head_seq else None
    last = _row_at(engine, head_seq) if head_seq else None
    auto = head_seq <= AUTO_VERIFY_ROWS
    verification = None
    diagnosis = None
    if verify or auto:
        t0 = time.perf_counter()
        result = log.verify()
        verification = {**result.to_dict(), "elapsed_ms": (time.perf_counter() - t0) * 1000,
                        "at_ns": time.time_ns(), "auto": not verify}
        if result.first_bad_seq is not None:
            diagnosis = diagnose(engine, result.first_bad_seq)
    return {
        "active": "audit",
        "head": {"seq": head_seq, "hash": head_hash},
        "first_ts_ns": first["ts_ns"] if first else None,
        "last_ts_ns": last["ts_ns"] if last else None,
        "auto_verify_rows": AUTO_VERIFY_ROWS,
        "verification": verification,
        "diagnosis": diagnosis,
        "export_url": "/audit/export",
    }


# -- export ------------------------------------------------------------------------------------------

def _time(value: str | None, what: str, now_ns: int) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        # integers exactly: through float, a nanosecond timestamp loses its last digits
        return parse_time_ns(int(text) if text.isdigit() else text, now_ns=now_ns)
    except ValueError as exc:
        raise HTTPException(400, f"{what}: {exc}") from exc


def export_rows(engine: Engine, since_ns: int | None, until_ns: int | None,
                chunk_size: int = EXPORT_CHUNK) -> Iterator[dict[str, Any]]:
    """Decision rows with since <= ts_ns < until, in seq order, ``chunk_size`` rows per query."""
    c = decisions_t.c
    last = 0
    while True:
        stmt = select(decisions_t).where(c.seq > last).order_by(c.seq).limit(chunk_size)
        if since_ns is not None:
            stmt = stmt.where(c.ts_ns >= since_ns)
        if until_ns is not None:
            stmt = stmt.where(c.ts_ns < until_ns)
        # a connection per chunk: a slow download holds no transaction (and no WAL snapshot) open
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        for r in rows:
            yield _row_dict(r)
        if len(rows) < chunk_size:
            return
        last = int(rows[-1].seq)


def _jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buf = bytearray()
    for row in rows:
        buf += orjson.dumps(row, default=str) + b"\n"
        if len(buf) >= 64 * 1024:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return orjson.dumps(value).decode()
    return value


def _csv(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in COLUMNS])
        if out.tell() >= 64 * 1024:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _stamp(ns: int | None, default: str) -> str:
    if ns is None:
        return default
    return (format_ns(ns) or default).replace(":", "").replace("-", "").replace(".", "")


@router.get("/audit/export", include_in_schema=False)
def export(request: Request, since: str | None = None, until: str | None = None, format: str = "jsonl") -> Response:
    if format not in FORMATS:
        raise HTTPException(400, f"unknown format {format!r}: use jsonl or csv")
    now = time.time_ns()
    since_ns, until_ns = _time(since, "since", now), _time(until, "until", now)
    if since_ns is not None and until_ns is not None and until_ns <= since_ns:
        raise HTTPException(400, "until must be after since")
    engine = request.app.state.proctor.engine
    flush_decisions(request)
    head_seq, head_hash = DecisionLog(engine).head()
    media_type, ext = FORMATS[format]
    name = f"proctor-decisions-{_stamp(since_ns, 'start')}-{_stamp(until_ns, 'now')}.{ext}"
    rows = export_rows(engine, since_ns, until_ns)
    body = _jsonl(rows) if format == "jsonl" else _csv(rows)
    return StreamingResponse(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"',
        # the head when the export started: lets an auditor anchor what they received
        "X-Proctor-Chain-Head": f"{head_seq}:{head_hash}",
        "Cache-Control": "no-store",
    })

