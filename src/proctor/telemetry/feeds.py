"""A live feed of the decision log, for metrics and alert rules.

The guard appends decisions from whichever process it runs in (the server's decision API, an
SDK in embedded mode, another replica), so the database is the only place that sees them all.
:class:`DecisionFeed` tails the hash-chained ``decisions`` table by ``seq`` and hands new rows
to its subscribers in seq order. Appends are serialized on the chain head row and a batch's
seqs are committed together, so a reader never sees seq N+1 before seq N: following
``seq > last_seq`` misses nothing and repeats nothing.

Polling (every ``poll_s``) is enough: one indexed range query that almost always returns no
rows. PostgreSQL's LISTEN could wake the feed earlier; a quarter second of latency does not
matter to metrics or to alert rules that look at minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Engine, bindparam, column, func, select, text
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from proctor.store.schema import decisions as decisions_t

__all__ = ["DecisionFeed", "DecisionRow"]

log = logging.getLogger(__name__)

DecisionRow = dict[str, Any]

#: the columns a subscriber gets, in this order; ``rule_kind`` is added when the table has it
FIELDS = ("seq", "decision_id", "ts_ns", "trace_id", "span_id", "session_id", "agent", "action", "target",
          "effect", "enforced", "rule_id", "policy_hash", "reasons")
_ERROR_LOG_EVERY_S = 60.0


class DecisionFeed:
    """Tails the hash-chained decision log (table ``decisions``) and hands new rows to
    subscribers, in seq order, from a background thread.

    Rows are dicts with the keys in :data:`FIELDS` (``enforced`` a bool, ``reasons`` a decoded
    list of strings) plus ``rule_kind`` (None when the table has no such column: before 0004). ``from_start=False``
    begins after the current last seq: only decisions made from now on.
    """

    def __init__(self, engine: Engine, *, poll_s: float = 0.25, from_start: bool = False, batch: int = 5000) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.batch = max(1, batch)
        self.last_seq = 0
        self._from_start = from_start
        self._positioned = False  # has last_seq been placed (at 0 or at the current end)?
        self._select: Any = None  # built on first use, from the columns the table really has
        self._subscribers: list[Callable[[list[DecisionRow]], None]] = []
        self._lock = threading.Lock()  # one poll at a time: rows go out once, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = 0
        self._last_error_log = 0.0
        try:
            with self._lock:
                self._position()
        except Exception as exc:  # the first poll retries
            self._db_error(exc)

    def subscribe(self, callback: Callable[[list[DecisionRow]], None]) -> None:
        """Call ``callback(rows)`` with each group of new rows (in the feed's thread, or in the
        caller's for :meth:`poll_once`). Exceptions are logged and swallowed."""
        self._subscribers.append(callback)

    def poll_once(self) -> int:
        """Fetch up to ``batch`` new rows and dispatch them now; returns how many there were.

        A database error is logged (at most once a minute) and 0 returned: the next poll retries.
        """
        with self._lock:
            try:
                if not self._positioned:
                    self._position()
                if self._select is None:
                    self._select = self._build_select()
                with self.engine.connect() as conn:
                    result = conn.execute(self._select, {"after": self.last_seq, "limit": self.batch})
                    keys = list(result.keys())
                    raw = result.all()
            except Exception as exc:
                self._db_error(exc)
                return 0
            if self._errors:
                log.info("decision feed: database reachable again after %d failed polls", self._errors)
                self._errors = 0
            if not raw:
                return 0
            rows = [_decode(keys, r) for r in raw]
            self.last_seq = rows[-1]["seq"]
            for cb in list(self._subscribers):
                try:
                    cb(rows)
                except Exception:
                    log.exception("decision feed subscriber %r failed", cb)
            return len(rows)

    def start(self) -> None:
        """Poll every ``poll_s`` from a daemon thread until :meth:`close`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="proctor-decision-feed", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    # --- internals -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.poll_once()
            except Exception:  # pragma: no cover - poll_once handles its own errors
                log.exception("decision feed poll failed")
                n = 0
            if n < self.batch:  # a full batch means more are waiting: go again at once
                self._stop.wait(self.poll_s)

    def _position(self) -> None:
        if not self._from_start:
            with self.engine.connect() as conn:
                self.last_seq = int(conn.execute(select(func.max(decisions_t.c.seq))).scalar() or 0)
        self._positioned = True

    def _build_select(self) -> Any:
        # Read the table's real columns: rule_kind exists only from migration 0004 on.
        with self.engine.connect() as conn:
            present = set(conn.execute(text("SELECT * FROM decisions WHERE 1 = 0")).keys())
        names = [*FIELDS, "rule_kind"] if "rule_kind" in present else list(FIELDS)
        cols: list[ColumnElement[Any] | ColumnClause[Any]] = [
            decisions_t.c[n] if n in decisions_t.c else column(n) for n in names
        ]
        seq = decisions_t.c.seq
        return (select(*cols).select_from(decisions_t).where(seq > bindparam("after"))
                .order_by(seq).limit(bindparam("limit")))

    def _db_error(self, exc: Exception) -> None:
        self._errors += 1
        now = time.monotonic()
        if self._errors == 1 or now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            log.warning("decision feed: cannot read the decision log (%d failed polls so far), retrying: %s",
                        self._errors, exc)


def _decode(keys: list[str], row: Any) -> DecisionRow:
    d = dict(zip(keys, row, strict=True))
    d["seq"] = int(d["seq"])
    d["ts_ns"] = int(d["ts_ns"])
    d["enforced"] = bool(d["enforced"])
    d.setdefault("rule_kind", None)
    reasons = d.get("reasons")
    try:
        d["reasons"] = orjson.loads(reasons) if reasons else []
    except orjson.JSONDecodeError:
        d["reasons"] = [str(reasons)]
    return d
