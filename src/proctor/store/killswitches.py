"""Kill switches: an operator stops an agent, a session or every side effect, everywhere, now.

A switch is a row per scope:

* ``global`` — every call of every agent is denied;
* ``agent:<name>`` / ``session:<id>`` — every call of that agent / session is denied;
* ``writes_off`` — every side-effecting tool call is denied (reads and LLM calls go on);
* ``writes_off:agent:<name>`` — the same, for one agent.

Guards must learn of a change within a second without querying the table on every call, so
every change also bumps the single-row ``kill_switch_version`` counter (cheap to poll) and, on
PostgreSQL, sends ``NOTIFY proctor_kill_switches`` in the same transaction (pushed to LISTENing
watchers at commit). :meth:`KillSwitches.watch` combines the two: it LISTENs where it can and
polls the version otherwise, so a lost notification or connection only delays, never loses,
a change.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from proctor.store.budgets import write_transaction
from proctor.store.schema import kill_switch_version as version_t
from proctor.store.schema import kill_switches as switches_t

__all__ = ["NOTIFY_CHANNEL", "KillSwitch", "KillSwitchWatcher", "KillSwitches", "blocking_switch", "validate_scope"]

NOTIFY_CHANNEL = "proctor_kill_switches"
_NAME = r"[^\s\x00-\x1f\x7f]{1,256}"
_SCOPE_RE = re.compile(rf"global|writes_off|approvals_only|(?:agent|session|writes_off:agent|approvals_only:agent):{_NAME}")
_RECONNECT_S = 5.0
_STOP_CHECK_S = 0.1
log = logging.getLogger(__name__)


def validate_scope(scope: str) -> str:
    """Return ``scope`` if it is well formed, else raise ValueError saying what is allowed."""
    if not isinstance(scope, str) or not _SCOPE_RE.fullmatch(scope):
        raise ValueError(
            f"invalid kill-switch scope {scope!r}: expected 'global', 'agent:<name>', 'session:<id>',"
            " 'writes_off', 'writes_off:agent:<name>', 'approvals_only' or 'approvals_only:agent:<name>'"
            " (names without spaces, at most 256 characters)"
        )
    return scope


@dataclass(slots=True)
class KillSwitch:
    scope: str
    active: bool
    reason: str
    set_by: str
    updated_ns: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def blocking_switch(
    active: Mapping[str, KillSwitch], *, agent: str | None, session_id: str | None, side_effecting: bool
) -> KillSwitch | None:
    """The active switch that stops a call of ``agent`` in ``session_id``, if any (broadest
    scope first, so the reason shown is the one an operator most likely has to lift)."""
    scopes = ["global"]
    if agent:
        scopes.append(f"agent:{agent}")
    if session_id:
        scopes.append(f"session:{session_id}")
    if side_effecting:
        scopes.append("writes_off")
        if agent:
            scopes.append(f"writes_off:agent:{agent}")
    for scope in scopes:
        switch = active.get(scope)
        if switch is not None and switch.active:
            return switch
    return None


def _row(r: Any) -> KillSwitch:
    return KillSwitch(r.scope, bool(r.active), r.reason, r.set_by, int(r.updated_ns))


class KillSwitches:
    """The kill switches in the database, shared by the console and every guard."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def set(self, scope: str, *, active: bool, by: str, reason: str = "") -> KillSwitch:
        """Turn the switch for ``scope`` on or off, bump the version and notify watchers, in one
        transaction (watchers can never see the version without the change)."""
        validate_scope(scope)
        if not by:
            raise ValueError("a kill-switch change needs the name of who made it")
        switch = KillSwitch(scope, bool(active), reason, by, time.time_ns())
        values = switch.to_dict()
        with write_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                pg_stmt = postgresql.insert(switches_t).values(values)
                stmt: Any = pg_stmt.on_conflict_do_update(
                    index_elements=["scope"], set_={k: pg_stmt.excluded[k] for k in values if k != "scope"}
                )
            else:
                lite_stmt = sqlite.insert(switches_t).values(values)
                stmt = lite_stmt.on_conflict_do_update(
                    index_elements=["scope"], set_={k: lite_stmt.excluded[k] for k in values if k != "scope"}
                )
            conn.execute(stmt)
            bumped = conn.execute(
                update(version_t).where(version_t.c.id == 1).values(version=version_t.c.version + 1)
            ).rowcount
            if not bumped:  # the seeded row is gone (restored from a partial dump?): recreate it
                conn.execute(insert(version_t).values(id=1, version=1))
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_notify(:channel, :scope)"), {"channel": NOTIFY_CHANNEL, "scope": scope})
        return switch

    def active(self) -> dict[str, KillSwitch]:
        """The switches that are on, by scope."""
        with self.engine.connect() as conn:
            return self._active(conn)

    @staticmethod
    def _active(conn: Connection) -> dict[str, KillSwitch]:
        rows = conn.execute(select(switches_t).where(switches_t.c.active.is_(True)))
        return {s.scope: s for s in map(_row, rows)}

    def list(self) -> builtins.list[KillSwitch]:
        """Every switch ever set, on or off, most recently changed first."""
        c = switches_t.c
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(select(switches_t).order_by(c.updated_ns.desc(), c.scope))]

    def version(self) -> int:
        """A number that changes whenever any switch changes: one primary-key read, for polling."""
        with self.engine.connect() as conn:
            v = conn.execute(select(version_t.c.version).where(version_t.c.id == 1)).scalar()
        return int(v or 0)

    def watch(
        self, callback: Callable[[dict[str, KillSwitch]], None], *, poll_interval_s: float = 0.25
    ) -> KillSwitchWatcher:
        """Call ``callback(active switches)`` now, then again after every change, from a daemon
        thread, until ``.stop()``. See :class:`KillSwitchWatcher`."""
        watcher = KillSwitchWatcher(self, callback, poll_interval_s)
        watcher.start()
        return watcher


class KillSwitchWatcher:
    """Delivers kill-switch changes to a callback.

    On PostgreSQL it LISTENs on a dedicated connection (not one from the pool: a pooled
    connection would be shared with other work and lose the LISTEN on reset) and re-reads the
    version when notified, or every ``poll_interval_s`` anyway; if that connection cannot be
    opened or breaks, it polls until it can reconnect. On SQLite it polls ``version()`` every
    ``poll_interval_s``. Changes that arrive together may be delivered as one call; the
    callback always receives the full current set of active switches, never a delta. A
    callback that raises is logged and called again on the next change.
    """

    def __init__(
        self, switches: KillSwitches, callback: Callable[[dict[str, KillSwitch]], None], poll_interval_s: float
    ) -> None:
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s!r}")
        self.switches = switches
        self.callback = callback
        self.poll_interval_s = poll_interval_s
        self.mode = "poll"  # "listen" while a LISTEN connection is up (for diagnostics and tests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proctor-kill-switch-watch", daemon=True)
        self._version = -1
        self._listen: Any = None  # psycopg.Connection while listening
        self._next_connect = 0.0

    def start(self) -> None:
        """Deliver the current state synchronously (so the caller never runs without it),
        then watch for changes in the background."""
        if self.switches.engine.dialect.name == "postgresql":
            self._connect()
        self._check(force=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _check(self, *, force: bool = False) -> None:
        # Version first, then the switches: a change landing in between is delivered now and
        # again (identically) next time — never missed.
        version = self.switches.version()
        if not force and version == self._version:
            return
        state = self.switches.active()
        self._version = version
        try:
            self.callback(state)
        except Exception:
            log.exception("kill-switch watcher callback failed")

    def _connect(self) -> None:
        self._next_connect = time.monotonic() + _RECONNECT_S
        try:
            import psycopg

            engine = self.switches.engine
            _, kwargs = engine.dialect.create_connect_args(engine.url)
            kwargs.pop("context", None)  # SQLAlchemy's adapter map; plain psycopg needs none
            kwargs.setdefault("connect_timeout", 5)  # an unreachable server must not stall watch()
            conn = psycopg.connect(**kwargs, autocommit=True)  # keeps options=-csearch_path=...
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception as e:
            log.warning("kill-switch watcher cannot LISTEN (%s); polling every %.2fs", e, self.poll_interval_s)
            self._close()
            return
        self._listen = conn
        self.mode = "listen"

    def _close(self) -> None:
        conn, self._listen = self._listen, None
        self.mode = "poll"
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                conn.close()

    def _wait(self) -> None:
        """Return after a notification, after poll_interval_s, or when stopped."""
        if self._listen is None and self.switches.engine.dialect.name == "postgresql" \
                and time.monotonic() >= self._next_connect:
            self._connect()
        if self._listen is None:
            self._stop.wait(self.poll_interval_s)
            return
        deadline = time.monotonic() + self.poll_interval_s
        try:
            # Short waits, so that stop() is honoured within _STOP_CHECK_S.
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                notified = False
                for _ in self._listen.notifies(timeout=min(left, _STOP_CHECK_S), stop_after=1):
                    notified = True
                if notified:
                    return
        except Exception as e:
            log.warning("kill-switch LISTEN connection lost (%s); polling until it is back", e)
            self._close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wait()
                if self._stop.is_set():
                    break
                try:
                    self._check()
                except Exception:
                    # Database unreachable: keep the last state delivered and try again.
                    log.exception("kill-switch watcher cannot read the switches")
                    self._stop.wait(self.poll_interval_s)
        finally:
            self._close()
