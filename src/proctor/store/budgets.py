"""Budgets: counters that many guard processes spend from at once, without overshooting.

A call that costs money (an LLM request, a tool call) first *reserves* its estimated cost
against every budget it counts towards (the session, the agent's day, the organisation's
month), then *settles* the reservation with what it really cost. A reservation is granted
only if ``used + reserved + amount <= limit`` for every part, so however many sessions spend
concurrently, the budget can be exceeded at most by what calls spend beyond their own
estimate — never by two sessions each seeing the same last dollar as free.

Why it is atomic:

* Each part is one conditional ``UPDATE ... SET reserved = reserved + :amt WHERE ... AND
  used + reserved + :amt <= :limit``: the check and the increment are one statement on one
  row, and all parts run in one transaction that is rolled back if any part is refused.
* PostgreSQL (READ COMMITTED): the UPDATE takes the row lock; if another transaction holds
  it, PostgreSQL waits for it to commit and then re-evaluates the WHERE clause against the
  row as that transaction left it, so two reservations can never both pass on the same
  stale value. Parts are always updated in sorted (key, metric) order so that two
  multi-part reservations cannot deadlock; a deadlock that happens anyway is retried.
* SQLite: the transaction starts with ``BEGIN IMMEDIATE``, which takes the database write
  lock up front (waiting up to busy_timeout), so write transactions from every process run
  one after another, and the conditional UPDATEs see the latest committed counters.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, case, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from proctor.store.schema import budget_counters as counters_t
from proctor.store.schema import budget_reservations as reservations_t

__all__ = [
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetUsage",
    "Reservation",
    "write_transaction",
]

Part = tuple[str, str]  # (budget key, metric)
T = TypeVar("T")

# PostgreSQL SQLSTATEs after which re-running the whole transaction is the correct response.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
_RETRIES = 5


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write, committed on success and rolled back on error.

    On SQLite it starts with ``BEGIN IMMEDIATE``: the write lock is taken before the first
    read, so a read-then-write transaction can neither act on a stale read nor fail with
    SQLITE_BUSY when upgrading its lock; concurrent writers in other processes queue on the
    engine's busy_timeout instead. (Python 3.11's sqlite3 issues no BEGIN of its own once a
    transaction is open, and SQLAlchemy's commit/rollback end this one.) On PostgreSQL it is
    an ordinary READ COMMITTED transaction; callers lock what they need explicitly.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn
        conn.commit()
    # Leaving ``engine.connect()`` without commit (an exception) rolls the transaction back.


def retry_transaction(fn: Callable[[], T]) -> T:
    """Run ``fn`` (which opens its own transaction) again if PostgreSQL aborted it as a deadlock
    victim or for a serialization failure; those transactions changed nothing."""
    for attempt in range(_RETRIES):
        try:
            return fn()
        except DBAPIError as e:
            sqlstate = getattr(e.orig, "sqlstate", None)
            if sqlstate not in _RETRYABLE_SQLSTATES or attempt == _RETRIES - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def insert_if_absent(conn: Connection, table: Table) -> Any:
    """An ``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect (primary key)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


@dataclass(slots=True)
class Reservation:
    """A granted claim on one or more budgets, to be settled (or released) exactly once."""

    id: str
    parts: dict[Part, float]
    created_ns: int
    expires_ns: int = 0


@dataclass(slots=True)
class BudgetExceeded:
    """A refused reservation: the first part that did not fit, with the counter as it stood
    (read under the row lock, so the numbers are the ones the refusal was decided on)."""

    key: str
    metric: str
    used: float
    reserved: float
    limit: float
    requested: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used - self.reserved)

    @property
    def message(self) -> str:
        return (
            f"budget {self.key} {self.metric} exceeded: used {self.used:g} + in flight {self.reserved:g}"
            f" + requested {self.requested:g} > limit {self.limit:g}"
        )

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class BudgetUsage:
    key: str
    metric: str
    used: float
    reserved: float
    limit: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "metric": self.metric, "used": self.used, "reserved": self.reserved,
                "limit": self.limit}


class _Refused(Exception):
    def __init__(self, exceeded: BudgetExceeded) -> None:
        self.exceeded = exceeded


def _check_amount(what: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


class BudgetLedger:
    """Budget counters in the database, shared by every process using the same engine URL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reserving and settling ------------------------------------------------------------

    def reserve(
        self,
        parts: Mapping[Part, float],
        *,
        limits: Mapping[Part, float],
        ttl_s: float = 600,
    ) -> Reservation | BudgetExceeded:
        """Claim ``amount`` from every ``(key, metric)`` in ``parts``, all or nothing.

        ``limits`` gives each part's current limit (the policy is the source of truth; the
        stored ``limit_value`` follows it). Returns the :class:`Reservation`, or the first
        part that did not fit as :class:`BudgetExceeded` — in which case nothing was claimed.
        An unsettled reservation is given back by :meth:`reap_expired` after ``ttl_s``.
        """
        if not parts:
            raise ValueError("a reservation needs at least one (key, metric) part")
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        items: list[tuple[Part, float, float]] = []
        for part, amount in sorted(parts.items()):  # sorted: one lock order for every caller
            if part not in limits:
                raise ValueError(f"no limit given for budget {part[0]} {part[1]}")
            items.append((part, _check_amount(f"amount for {part}", amount),
                           _check_amount(f"limit for {part}", limits[part])))

        def attempt() -> Reservation:
            now = time.time_ns()
            res = Reservation(uuid.uuid4().hex, {p: a for p, a, _ in items}, now, now + int(ttl_s * 1e9))
            with write_transaction(self.engine) as conn:
                conn.execute(insert_if_absent(conn, counters_t), [
                    {"key": k, "metric": m, "used": 0.0, "reserved": 0.0, "limit_value": lim, "updated_ns": now}
                    for (k, m), _, lim in items
                ])
                for (k, m), amount, lim in items:
                    self._claim(conn, k, m, amount, lim, now)
                conn.execute(insert(reservations_t), [
                    {"id": res.id, "key": k, "metric": m, "amount": amount, "created_ns": now,
                     "expires_ns": res.expires_ns}
                    for (k, m), amount, _ in items
                ])
            return res

        try:
            return retry_transaction(attempt)
        except _Refused as r:
            return r.exceeded

    def _claim(self, conn: Connection, key: str, metric: str, amount: float, limit: float, now: int) -> None:
        c = counters_t.c
        where = (c.key == key) & (c.metric == metric)
        claim = (
            update(counters_t)
            .where(where, c.used + c.reserved + amount <= limit)
            .values(reserved=c.reserved + amount, limit_value=limit, updated_ns=now)
        )
        if conn.execute(claim).rowcount == 1:
            return
        # Refused. Read the counter under its row lock (FOR UPDATE; SQLite already holds the
        # database write lock) so the refusal reports exactly the state it is decided on. On
        # PostgreSQL a reservation settled between the two statements may have freed room:
        # then the claim now fits and, with the lock held, the UPDATE must succeed.
        row = conn.execute(
            select(c.used, c.reserved).where(where).with_for_update()
        ).one()
        used, reserved = float(row.used), float(row.reserved)
        if used + reserved + amount <= limit and conn.execute(claim).rowcount == 1:
            return
        raise _Refused(BudgetExceeded(key, metric, used, reserved, limit, amount))

    def settle(self, reservation: Reservation | str, actual: Mapping[Part, float] | None = None) -> bool:
        """Replace the reservation by what was really spent, in one transaction.

        ``actual`` may exceed the reserved amount (the truth is recorded; later reservations
        see less room), and parts left out count as zero. Settling is idempotent: only the
        first call for a reservation changes anything; it returns True, later calls return
        False. So does settling a reservation that :meth:`reap_expired` already gave back
        (settled after its TTL): its spend is then not recorded, and a caller that must count
        it can :meth:`charge` it.
        """
        rid = reservation if isinstance(reservation, str) else reservation.id
        spent = {part: _check_amount(f"actual for {part}", v) for part, v in (actual or {}).items()}
        if not isinstance(reservation, str) and (unknown := set(spent) - set(reservation.parts)):
            raise ValueError(
                f"actual names budgets the reservation did not claim: {sorted(unknown)}; use charge() for those"
            )

        def attempt() -> bool:
            now = time.time_ns()
            with write_transaction(self.engine) as conn:
                # DELETE ... RETURNING claims the reservation rows: of two concurrent settles
                # (or a settle and the reaper) exactly one gets them.
                rows = conn.execute(
                    delete(reservations_t)
                    .where(reservations_t.c.id == rid)
                    .returning(reservations_t.c.key, reservations_t.c.metric, reservations_t.c.amount)
                ).all()
                if not rows:
                    return False
                unknown_parts = set(spent) - {(r.key, r.metric) for r in rows}
                if unknown_parts:
                    raise ValueError(f"actual names budgets the reservation did not claim: {sorted(unknown_parts)}")
                c = counters_t.c
                for key, metric, amount in sorted(rows, key=lambda r: (r.key, r.metric)):
                    conn.execute(
                        update(counters_t)
                        .where(c.key == key, c.metric == metric)
                        .values(
                            # Clamp float residue: never report a negative amount in flight.
                            reserved=case((c.reserved - amount > 0, c.reserved - amount), else_=0.0),
                            used=c.used + spent.get((key, metric), 0.0),
                            updated_ns=now,
                        )
                    )
            return True

        return retry_transaction(attempt)

    def release(self, reservation: Reservation | str) -> bool:
        """Give a reservation back unspent (the call was refused or never made)."""
        return self.settle(reservation, {})

    def charge(self, key: str, metric: str, amount: float, limit: float) -> BudgetUsage:
        """Add usage that was never reserved (e.g. wall time, known only afterwards).

        Not refused even if it goes over the limit: it already happened. The next
        reservation against this budget will be refused instead.
        """
        amount = _check_amount("amount", amount)
        limit = _check_amount("limit", limit)
        c = counters_t.c

        def attempt() -> BudgetUsage:
            now = time.time_ns()
            with write_transaction(self.engine) as conn:
                conn.execute(insert_if_absent(conn, counters_t), {
                    "key": key, "metric": metric, "used": 0.0, "reserved": 0.0, "limit_value": limit,
                    "updated_ns": now,
                })
                row = conn.execute(
                    update(counters_t)
                    .where(c.key == key, c.metric == metric)
                    .values(used=c.used + amount, limit_value=limit, updated_ns=now)
                    .returning(c.used, c.reserved, c.limit_value)
                ).one()
            return BudgetUsage(key, metric, float(row.used), float(row.reserved), float(row.limit_value))

        return retry_transaction(attempt)

    def reap_expired(self, now_ns: int | None = None) -> int:
        """Give back every reservation past its expiry (its process crashed or forgot to
        settle), so that it does not hold budget forever. Returns how many were released."""
        now = time.time_ns() if now_ns is None else now_ns
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(reservations_t.c.id).where(reservations_t.c.expires_ns <= now).distinct()
            ).scalars().all()
        # One transaction per reservation, through the same path as settle(): a reservation
        # settled concurrently is given back once, by whichever gets its rows first.
        return sum(1 for rid in ids if self.settle(rid, {}))

    # -- reading ------------------------------------------------------------------------------

    def usage(self, key_prefix: str | None = None) -> list[BudgetUsage]:
        """Every counter (or those whose key starts with ``key_prefix``), by key and metric."""
        c = counters_t.c
        stmt = select(c.key, c.metric, c.used, c.reserved, c.limit_value).order_by(c.key, c.metric)
        if key_prefix:
            stmt = stmt.where(c.key.startswith(key_prefix, autoescape=True))
        with self.engine.connect() as conn:
            return [
                BudgetUsage(r.key, r.metric, float(r.used), float(r.reserved), float(r.limit_value))
                for r in conn.execute(stmt)
            ]

    def open_reservations(self) -> int:
        """How many reservations are in flight (not settled, released or reaped)."""
        with self.engine.connect() as conn:
            return len(conn.execute(select(reservations_t.c.id).distinct()).all())
