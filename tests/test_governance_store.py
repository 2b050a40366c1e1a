"""Governance state on SQLite and PostgreSQL: budgets, approvals, kill switches, decision log.

What the guards and the console rely on: budgets shared by concurrent sessions are never
overshot, an approval releases only the call it was given for and only once, a kill switch
set anywhere reaches every guard within a second, and any tampering with the decision log
is found by verify().

Several tests run real OS processes (multiprocessing, spawn) against one database, because
that is the deployment: many guard processes, one store. Worker functions live at module
level so that spawned children can import them.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest
from sqlalchemy import Engine, text

from proctor.store import open_engine
from proctor.store.approvals import (
    Approval,
    ApprovalError,
    ApprovalNotFound,
    ApprovalRefused,
    ApprovalStore,
)
from proctor.store.budgets import BudgetExceeded, BudgetLedger, Reservation
from proctor.store.decisions import GENESIS_HASH, DecisionLog, DecisionRecord
from proctor.store.killswitches import KillSwitch, KillSwitches, blocking_switch

ORG = ("org_month:2026-11", "usd")
AGENT_DAY = ("agent_day:support-triage:2026-11-22", "usd")
SHARED_LIMIT = 120.0
MAX_REQUEST = 3.0
LIMITS = {ORG: SHARED_LIMIT, AGENT_DAY: 10_000.0}
EPS = 1e-6


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_engine(db_url)
    yield e
    e.dispose()


@pytest.fixture
def ledger(engine: Engine) -> BudgetLedger:
    return BudgetLedger(engine)


def _serve(tasks: Any, results: Any) -> None:
    """A worker process: run each (index, function, args) it is sent, report (index, pid, result)."""
    while (task := tasks.get()) is not None:
        index, fn, args = task
        try:
            results.put((index, os.getpid(), fn(*args), None))
        except BaseException as e:
            results.put((index, os.getpid(), None, f"{type(e).__name__}: {e}"))


class Workers:
    """Separate OS processes (spawned: nothing inherited from this one), started once and shared
    by the multi-process tests, which would otherwise spend most of their time starting Python.
    Each worker has its own task queue, so ``run`` really spreads its calls over that many
    processes; tasks that must run at the same moment are given a start time."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.queues = [ctx.Queue() for _ in range(n)]
        self.procs = [ctx.Process(target=_serve, args=(q, self.results), daemon=True) for q in self.queues]
        for p in self.procs:
            p.start()
        self.pids = {pid for pid, _ in self.run(os.getpid, [()] * n, timeout=120)}
        assert len(self.pids) == n and os.getpid() not in self.pids

    def start(self, fn: Any, args: list[tuple[Any, ...]]) -> None:
        for i, a in enumerate(args):
            self.queues[i].put((i, fn, a))

    def finished(self, n: int) -> bool:
        return self.results.qsize() >= n

    def collect(self, n: int, timeout: float = 60) -> list[tuple[int, Any]]:
        """(pid, result) of the last ``n`` calls started, in call order."""
        got = sorted((self.results.get(timeout=timeout) for _ in range(n)), key=lambda r: r[0])
        errors = [e for *_, e in got if e is not None]
        assert not errors, errors
        return [(pid, result) for _, pid, result, _ in got]

    def run(self, fn: Any, args: list[tuple[Any, ...]], timeout: float = 60) -> list[tuple[int, Any]]:
        self.start(fn, args)
        return self.collect(len(args), timeout)

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        deadline = time.monotonic() + 1.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():  # idle between tasks, holding nothing: no need to wait for a slow exit
                p.terminate()
                p.join(5)


@pytest.fixture(scope="module")
def processes() -> Iterator[Workers]:
    workers = Workers(8)
    yield workers
    workers.close()


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def counter(ledger: BudgetLedger, part: tuple[str, str]) -> tuple[float, float, float]:
    (u,) = [u for u in ledger.usage(part[0]) if (u.key, u.metric) == part]
    return u.used, u.reserved, u.limit


# --- budgets -------------------------------------------------------------------------------


def test_a_granted_reservation_counts_as_in_flight_until_settled(ledger: BudgetLedger) -> None:
    res = ledger.reserve({ORG: 2.5}, limits=LIMITS)
    assert isinstance(res, Reservation)
    assert res.parts == {ORG: 2.5} and res.expires_ns > res.created_ns
    assert counter(ledger, ORG) == (0.0, 2.5, SHARED_LIMIT)

    assert ledger.settle(res, {ORG: 1.75}) is True
    assert counter(ledger, ORG) == (1.75, 0.0, SHARED_LIMIT)
    assert ledger.open_reservations() == 0


def test_a_ninth_reservation_is_refused_when_the_budget_is_spent(ledger: BudgetLedger) -> None:
    part = ("session:abc", "tool_calls")
    held = [ledger.reserve({part: 1}, limits={part: 8}) for _ in range(8)]
    assert all(isinstance(r, Reservation) for r in held)

    refused = ledger.reserve({part: 1}, limits={part: 8})

    assert refused == BudgetExceeded("session:abc", "tool_calls", used=0.0, reserved=8.0, limit=8.0, requested=1.0)
    assert "session:abc tool_calls exceeded" in refused.message and "limit 8" in refused.message
    assert counter(ledger, part) == (0.0, 8.0, 8.0)  # the refusal claimed nothing


def test_budget_freed_by_a_cheaper_than_expected_call_can_be_reserved_again(ledger: BudgetLedger) -> None:
    part = ("session:abc", "usd")
    first = ledger.reserve({part: 1.0}, limits={part: 1.0})
    assert isinstance(ledger.reserve({part: 0.5}, limits={part: 1.0}), BudgetExceeded)
    assert isinstance(first, Reservation)
    ledger.settle(first, {part: 0.25})
    assert isinstance(ledger.reserve({part: 0.75}, limits={part: 1.0}), Reservation)


def test_a_reservation_refused_on_one_part_claims_nothing_on_the_others(ledger: BudgetLedger) -> None:
    session_calls = ("session:abc", "tool_calls")
    session_usd = ("session:abc", "usd")
    limits = {ORG: SHARED_LIMIT, session_calls: 2, session_usd: 5.0}
    ok = ledger.reserve({ORG: 1, session_calls: 1, session_usd: 4.0}, limits=limits)
    assert isinstance(ok, Reservation)

    refused = ledger.reserve({ORG: 1, session_calls: 1, session_usd: 2.0}, limits=limits)

    assert isinstance(refused, BudgetExceeded)
    assert (refused.key, refused.metric, refused.used, refused.reserved, refused.requested) == (
        "session:abc", "usd", 0.0, 4.0, 2.0)
    assert counter(ledger, ORG)[1] == 1.0
    assert counter(ledger, session_calls)[1] == 1.0
    assert ledger.open_reservations() == 1


def test_settling_twice_changes_nothing_the_second_time(ledger: BudgetLedger) -> None:
    res = ledger.reserve({ORG: 3.0, AGENT_DAY: 3.0}, limits=LIMITS)
    assert isinstance(res, Reservation)
    assert ledger.settle(res, {ORG: 2.0, AGENT_DAY: 2.0}) is True
    assert ledger.settle(res, {ORG: 2.0, AGENT_DAY: 2.0}) is False
    assert ledger.release(res) is False
    assert counter(ledger, ORG)[:2] == (2.0, 0.0)
    assert counter(ledger, AGENT_DAY)[:2] == (2.0, 0.0)


def test_spending_more_than_reserved_is_recorded_and_blocks_what_no_longer_fits(ledger: BudgetLedger) -> None:
    part = ("session:abc", "usd")
    res = ledger.reserve({part: 1.0}, limits={part: 5.0})
    assert isinstance(res, Reservation)
    ledger.settle(res, {part: 4.5})  # the model wrote far more than estimated: record the truth
    assert counter(ledger, part) == (4.5, 0.0, 5.0)
    assert isinstance(ledger.reserve({part: 1.0}, limits={part: 5.0}), BudgetExceeded)
    assert isinstance(ledger.reserve({part: 0.5}, limits={part: 5.0}), Reservation)


def test_settling_a_budget_the_reservation_did_not_claim_is_refused(ledger: BudgetLedger) -> None:
    res = ledger.reserve({ORG: 1.0}, limits=LIMITS)
    assert isinstance(res, Reservation)
    with pytest.raises(ValueError, match="did not claim"):
        ledger.settle(res, {AGENT_DAY: 1.0})
    assert ledger.open_reservations() == 1  # nothing happened; it can still be settled


def test_charge_adds_usage_without_a_reservation_even_past_the_limit(ledger: BudgetLedger) -> None:
    part = ("session:abc", "wall_s")
    assert ledger.charge(*part, 50.0, limit=60.0).used == 50.0
    usage = ledger.charge(*part, 15.0, limit=60.0)
    assert (usage.used, usage.reserved, usage.limit) == (65.0, 0.0, 60.0)
    assert isinstance(ledger.reserve({part: 0.001}, limits={part: 60.0}), BudgetExceeded)


def test_expired_reservations_are_reaped_so_a_crashed_process_does_not_hold_budget(ledger: BudgetLedger) -> None:
    part = ("session:abc", "usd")
    crashed = ledger.reserve({part: 4.0, ORG: 4.0}, limits={part: 5.0, ORG: SHARED_LIMIT}, ttl_s=0.01)
    alive = ledger.reserve({part: 1.0}, limits={part: 5.0}, ttl_s=600)
    assert isinstance(crashed, Reservation) and isinstance(alive, Reservation)
    assert isinstance(ledger.reserve({part: 1.0}, limits={part: 5.0}), BudgetExceeded)

    assert ledger.reap_expired(now_ns=crashed.expires_ns + 1) == 1

    assert counter(ledger, part)[:2] == (0.0, 1.0)
    assert counter(ledger, ORG)[:2] == (0.0, 0.0)
    assert ledger.settle(crashed, {part: 4.0}) is False  # too late: it was given back
    assert ledger.reap_expired(now_ns=crashed.expires_ns + 1) == 0
    assert ledger.open_reservations() == 1


def test_usage_lists_counters_whose_key_starts_with_the_prefix_literally(ledger: BudgetLedger) -> None:
    for key in ("session:a_1", "session:ab1", "agent_day:x:2026-11-22"):
        ledger.charge(key, "usd", 1.0, limit=10.0)
    assert [u.key for u in ledger.usage("session:a_")] == ["session:a_1"]  # '_' is not a wildcard
    assert [u.key for u in ledger.usage("session:")] == ["session:a_1", "session:ab1"]
    assert len(ledger.usage()) == 3


def test_malformed_reservations_are_refused_before_touching_the_database(ledger: BudgetLedger) -> None:
    with pytest.raises(ValueError, match="no limit given"):
        ledger.reserve({ORG: 1.0}, limits={})
    with pytest.raises(ValueError, match="finite number >= 0"):
        ledger.reserve({ORG: -1.0}, limits=LIMITS)
    with pytest.raises(ValueError, match="finite number >= 0"):
        ledger.reserve({ORG: float("nan")}, limits=LIMITS)
    with pytest.raises(ValueError, match="at least one"):
        ledger.reserve({}, limits=LIMITS)
    assert ledger.usage() == []


def _spend_until_refused(ledger: BudgetLedger, worker: int, deadline: float) -> dict[str, Any]:
    """One session's loop: reserve a random amount, 'call', settle what it really cost."""
    rng = random.Random(worker)
    session = (f"session:w{worker}", "tool_calls")
    limits = {**LIMITS, session: 1000}
    spent, granted, refusal = 0.0, 0, None
    for _ in range(200):
        if time.monotonic() > deadline:
            break
        amount = round(rng.uniform(0.5, MAX_REQUEST), 2)
        parts = {ORG: amount, AGENT_DAY: amount, session: 1.0}
        res = ledger.reserve(dict(rng.sample(list(parts.items()), 3)), limits=limits)  # any order
        if isinstance(res, BudgetExceeded):
            refusal = asdict(res)
            break
        granted += 1
        actual = amount if rng.random() < 0.3 else round(amount * rng.uniform(0.2, 1.0), 4)
        time.sleep(rng.uniform(0, 0.002))
        ledger.settle(res, {ORG: actual, AGENT_DAY: actual, session: 1.0})
        spent += actual
    return {"worker": worker, "spent": spent, "granted": granted, "refusal": refusal}


def _spend_worker(url: str, worker: int, start_at: float) -> dict[str, Any]:
    engine = open_engine(url)
    try:
        ledger = BudgetLedger(engine)
        _sleep_until(start_at)  # every session starts spending at the same moment
        return _spend_until_refused(ledger, worker, time.monotonic() + 60)
    finally:
        engine.dispose()


def _sample_until(ledger: BudgetLedger, is_done: Any) -> list[tuple[float, float]]:
    samples = []
    deadline = time.monotonic() + 90
    while not is_done() and time.monotonic() < deadline:
        usage = [u for u in ledger.usage("org_month:") if (u.key, u.metric) == ORG]
        if usage:
            samples.append((usage[0].used, usage[0].reserved))
        time.sleep(0.005)
    return samples


def _assert_budget_held(ledger: BudgetLedger, outcomes: list[dict[str, Any]], samples: list[tuple[float, float]]) -> None:
    used, reserved, limit = counter(ledger, ORG)
    # No overshoot, ever: neither at the end nor in any sample taken while sessions spent.
    assert used <= limit + EPS
    assert samples and max(u + r for u, r in samples) <= limit + EPS
    # Nothing lost, nothing left in flight.
    assert abs(used - sum(o["spent"] for o in outcomes)) < 1e-6
    assert reserved < EPS and ledger.open_reservations() == 0
    assert counter(ledger, AGENT_DAY)[0] == pytest.approx(used)
    # Every session was refused in the end, and only because the budget was (nearly) spent:
    # the refusal's own numbers, read under the lock, show the request did not fit.
    for o in outcomes:
        r = o["refusal"]
        assert r is not None, f"worker {o['worker']} was never refused"
        assert (r["key"], r["metric"]) == ORG
        assert r["used"] + r["reserved"] + r["requested"] > r["limit"]
        assert r["used"] + r["reserved"] > limit - MAX_REQUEST
    assert sum(o["granted"] for o in outcomes) >= SHARED_LIMIT / MAX_REQUEST


def test_eight_concurrent_sessions_in_threads_never_overshoot_one_budget(ledger: BudgetLedger) -> None:
    outcomes: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    threads = [threading.Thread(target=lambda w=w: outcomes.append(_spend_until_refused(ledger, w, deadline)))
               for w in range(8)]
    for t in threads:
        t.start()
    samples = _sample_until(ledger, lambda: not any(t.is_alive() for t in threads))
    for t in threads:
        t.join(5)
    assert len(outcomes) == 8
    _assert_budget_held(ledger, outcomes, samples)


def test_eight_concurrent_sessions_in_separate_processes_never_overshoot_one_budget(
    db_url: str, ledger: BudgetLedger, processes: Workers
) -> None:
    """The issue's acceptance test: no budget is overshot beyond the in-flight reservation with
    8 concurrent sessions spending from one budget, on SQLite and on PostgreSQL."""
    ledger.charge(*ORG, 0.0, limit=SHARED_LIMIT)  # so the parent can sample from the first spend
    processes.start(_spend_worker, [(db_url, w, time.time() + 0.5) for w in range(8)])
    samples = _sample_until(ledger, lambda: processes.finished(8))
    done = processes.collect(8)
    assert len({pid for pid, _ in done}) == 8  # eight sessions, eight processes
    outcomes = [outcome for _, outcome in done]
    _assert_budget_held(ledger, outcomes, samples)


# --- approvals -----------------------------------------------------------------------------


@pytest.fixture
def approvals(engine: Engine) -> ApprovalStore:
    return ApprovalStore(engine)


def ask(store: ApprovalStore, digest: str = "d" * 64, ttl_s: float = 300, **kw: Any) -> Approval:
    args: dict[str, Any] = {
        "digest": digest, "tool": "refund", "arguments": {"order": 17, "amount": 20},
        "policy_hash": "p" * 64, "session_id": "s-1", "agent": "support-triage",
        "rule_id": "refunds-need-approval", "message": "refund over $10", "ttl_s": ttl_s,
        "trace_id": "a" * 32, "span_id": "b" * 16,
    }
    args.update(kw)
    return store.request(**args)


def age(store: ApprovalStore, approval_id: str, seconds: float, *columns: str) -> None:
    """Move an approval's timestamps into the past, as if ``seconds`` had gone by."""
    sets = ", ".join(f"{c} = {c} - :d" for c in columns)
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE approvals SET {sets} WHERE id = :id"), {"d": int(seconds * 1e9), "id": approval_id})


def test_an_approval_request_waits_for_a_human(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    assert a.status == "pending" and len(a.id) == 32
    assert a.arguments == {"order": 17, "amount": 20}
    assert a.expires_ns - a.requested_ns == 300 * 10**9
    assert approvals.get(a.id) == a
    assert approvals.list("pending") == [a]
    assert approvals.pending_count() == 1
    d = a.to_dict()
    assert d["status"] == "pending" and d["use_until_ns"] is None and d["trace_id"] == "a" * 32


def test_the_queue_order_keeps_the_soonest_to_expire_within_the_limit(approvals: ApprovalStore) -> None:
    urgent = ask(approvals, "1" * 64, ttl_s=60)  # asked first, expires first
    later = [ask(approvals, str(n) * 64, ttl_s=600) for n in range(2, 5)]
    assert approvals.list("pending", limit=2)[0].id == later[-1].id  # newest first: the urgent one falls off
    queue = approvals.list("pending", limit=2, soonest_expiry_first=True)
    assert [a.id for a in queue] == [urgent.id, later[0].id]


def test_asking_again_for_the_same_call_returns_the_open_request(approvals: ApprovalStore) -> None:
    first = ask(approvals)
    assert ask(approvals).id == first.id
    assert ask(approvals, digest="e" * 64).id != first.id
    assert len(approvals.list()) == 2


def test_concurrent_requests_for_the_same_call_make_one_approval(approvals: ApprovalStore) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(ask(approvals).id)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(ids) == 6 and len(set(ids)) == 1


def test_an_approved_call_can_be_used_exactly_once(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    decided = approvals.decide(a.id, approved=True, by="alice", reason="customer verified")
    assert (decided.status, decided.decided_by, decided.decision_reason) == ("approved", "alice", "customer verified")
    assert approvals.find_usable(a.digest) == decided

    used = approvals.consume(a.id, a.digest)

    assert used.status == "consumed" and used.consumed_ns is not None
    assert approvals.find_usable(a.digest) is None
    with pytest.raises(ApprovalRefused, match="already used") as refused:
        approvals.consume(a.id, a.digest)
    assert refused.value.reason == "already used" and refused.value.approval_id == a.id


def test_two_guards_racing_to_use_one_approval_succeed_once(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    approvals.decide(a.id, approved=True, by="alice", reason="ok")
    outcomes: list[str] = []

    def use() -> None:
        try:
            approvals.consume(a.id, a.digest)
            outcomes.append("used")
        except ApprovalRefused as e:
            outcomes.append(e.reason)

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["already used"] * 5 + ["used"]


def test_an_approval_for_one_call_cannot_release_another(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    approvals.decide(a.id, approved=True, by="alice", reason="ok")
    with pytest.raises(ApprovalRefused, match=r"^digest mismatch: this approval is for a different call$"):
        approvals.consume(a.id, "f" * 64)
    assert approvals.get(a.id).status == "approved"  # still usable for the call it was given for
    assert approvals.find_usable("f" * 64) is None


def test_a_denied_approval_is_refused_with_who_denied_it_and_why(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    approvals.decide(a.id, approved=False, by="bob", reason="order already refunded")
    with pytest.raises(ApprovalRefused, match=r"^denied by bob: order already refunded$"):
        approvals.consume(a.id, a.digest)
    assert approvals.find_usable(a.digest) is None


def test_a_pending_approval_cannot_be_used(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    with pytest.raises(ApprovalRefused, match=r"^still pending$"):
        approvals.consume(a.id, a.digest)


def test_an_approval_can_be_decided_only_once(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    approvals.decide(a.id, approved=True, by="alice", reason="ok")
    with pytest.raises(ApprovalError, match=f"approval {a.id} already approved by alice at 20"):
        approvals.decide(a.id, approved=False, by="bob", reason="no")
    approvals.consume(a.id, a.digest)
    with pytest.raises(ApprovalError, match=r"already approved by alice .* and used at"):
        approvals.decide(a.id, approved=True, by="bob", reason="again")
    assert approvals.get(a.id).decided_by == "alice"


def test_a_pending_approval_past_its_ttl_is_expired_and_can_no_longer_be_decided(approvals: ApprovalStore) -> None:
    a = ask(approvals, ttl_s=300)
    age(approvals, a.id, 301, "requested_ns", "expires_ns")

    assert approvals.get(a.id).status == "expired"  # reported at once ...
    assert [x.id for x in approvals.list("expired")] == [a.id]
    assert approvals.list("pending") == [] and approvals.pending_count() == 0
    assert approvals.expire_due() == 1  # ... and persisted by expire_due
    assert approvals.expire_due() == 0
    with pytest.raises(ApprovalError, match=f"approval {a.id} expired at 20"):
        approvals.decide(a.id, approved=True, by="alice", reason="late")
    with pytest.raises(ApprovalRefused, match=r"^expired$"):
        approvals.consume(a.id, a.digest)
    assert ask(approvals).id != a.id  # asking again opens a fresh request


def test_deciding_an_expired_request_records_that_it_expired(approvals: ApprovalStore) -> None:
    a = ask(approvals)
    age(approvals, a.id, 301, "requested_ns", "expires_ns")
    with pytest.raises(ApprovalError, match="expired"):
        approvals.decide(a.id, approved=True, by="alice", reason="late")
    with approvals.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM approvals WHERE id = :id"), {"id": a.id}).scalar() == "expired"


def test_an_approval_is_usable_for_one_ttl_after_the_decision(approvals: ApprovalStore) -> None:
    # Approved at the last moment: usable after the request's own expiry, for one more TTL.
    late = ask(approvals, ttl_s=300)
    approvals.decide(late.id, approved=True, by="alice", reason="ok")
    age(approvals, late.id, 299, "requested_ns", "expires_ns")
    age(approvals, late.id, 2, "requested_ns", "expires_ns")  # the request itself has expired now
    assert approvals.find_usable(late.digest) is not None
    assert approvals.consume(late.id, late.digest).status == "consumed"

    stale = ask(approvals, digest="e" * 64, ttl_s=300)
    approvals.decide(stale.id, approved=True, by="alice", reason="ok")
    age(approvals, stale.id, 301, "requested_ns", "expires_ns", "decided_ns")
    assert approvals.find_usable(stale.digest) is None
    with pytest.raises(ApprovalRefused, match=r"^expired$"):
        approvals.consume(stale.id, stale.digest)


def test_unknown_approval_ids_are_not_found(approvals: ApprovalStore) -> None:
    for call in (lambda: approvals.get("nope"),
                 lambda: approvals.decide("nope", approved=True, by="alice", reason=""),
                 lambda: approvals.consume("nope", "d" * 64)):
        with pytest.raises(ApprovalNotFound, match="no approval 'nope'"):
            call()
    assert issubclass(ApprovalNotFound, LookupError) and issubclass(ApprovalNotFound, ApprovalError)


def test_approvals_are_listed_newest_first_and_filtered_by_status(approvals: ApprovalStore) -> None:
    made = [ask(approvals, digest=str(i) * 64) for i in range(4)]
    approvals.decide(made[0].id, approved=True, by="alice", reason="")
    approvals.decide(made[1].id, approved=False, by="bob", reason="")
    assert [a.id for a in approvals.list()] == [a.id for a in reversed(made)]
    assert [a.id for a in approvals.list(limit=2)] == [made[3].id, made[2].id]
    assert [a.id for a in approvals.list("approved")] == [made[0].id]
    assert [a.id for a in approvals.list("denied")] == [made[1].id]
    assert [a.id for a in approvals.list("pending")] == [made[3].id, made[2].id]
    with pytest.raises(ValueError, match="unknown approval status 'bogus'"):
        approvals.list("bogus")


# --- kill switches ------------------------------------------------------------------------


@pytest.fixture
def switches(engine: Engine) -> KillSwitches:
    return KillSwitches(engine)


def test_a_kill_switch_stays_on_until_turned_off_and_every_change_bumps_the_version(
    switches: KillSwitches,
) -> None:
    assert switches.version() == 0 and switches.active() == {}
    on = switches.set("agent:support-triage", active=True, by="oncall", reason="refund loop")
    assert switches.version() == 1
    assert switches.active() == {"agent:support-triage": on}
    switches.set("writes_off", active=True, by="oncall")
    switches.set("agent:support-triage", active=False, by="oncall", reason="fixed")
    assert switches.version() == 3
    assert list(switches.active()) == ["writes_off"]
    listed = switches.list()
    assert [s.scope for s in listed] == ["agent:support-triage", "writes_off"]  # newest change first
    assert listed[0].active is False and listed[0].reason == "fixed"


def test_malformed_kill_switch_scopes_are_refused_clearly(switches: KillSwitches) -> None:
    for scope in ("", "agent:", "agent", "tenant:x", "session:has space", "writes_off:session:x", "GLOBAL"):
        with pytest.raises(ValueError, match=r"invalid kill-switch scope .*expected 'global'"):
            switches.set(scope, active=True, by="oncall")
    for scope in ("global", "writes_off", "agent:a.b-c", "session:7f3a:9", "writes_off:agent:support-triage"):
        switches.set(scope, active=True, by="oncall")
    assert len(switches.active()) == 5
    with pytest.raises(ValueError, match="who made it"):
        switches.set("global", active=False, by="")


def test_the_blocking_switch_is_the_broadest_that_applies_to_the_call() -> None:
    def on(*scopes: str) -> dict[str, KillSwitch]:
        return {s: KillSwitch(s, True, "", "oncall", 0) for s in scopes}

    call = {"agent": "triage", "session_id": "s1"}
    assert blocking_switch(on("agent:other", "session:s2"), **call, side_effecting=True) is None
    assert blocking_switch(on("session:s1", "global"), **call, side_effecting=False).scope == "global"  # type: ignore[union-attr]
    assert blocking_switch(on("writes_off"), **call, side_effecting=False) is None
    assert blocking_switch(on("writes_off:agent:triage"), **call, side_effecting=True) is not None
    assert blocking_switch(on("agent:triage"), **call, side_effecting=False) is not None


def test_a_watcher_receives_the_current_state_before_watch_returns(switches: KillSwitches) -> None:
    switches.set("global", active=True, by="oncall", reason="incident")
    seen: list[dict[str, KillSwitch]] = []
    watcher = switches.watch(seen.append, poll_interval_s=0.05)
    try:
        assert len(seen) == 1 and list(seen[0]) == ["global"]
        switches.set("global", active=False, by="oncall")
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen[-1] == {}
    finally:
        watcher.stop()
    assert not watcher.running


def _flip_switches(url: str, go: Any, out: Any) -> None:
    engine = open_engine(url)
    try:
        switches = KillSwitches(engine)
        for i, active in enumerate((True, False, True)):
            go.wait(30)
            go.clear()
            t0 = time.time()
            switches.set("agent:support-triage", active=active, by="oncall", reason=f"change {i}")
            out.put((i, active, t0, time.time()))
    finally:
        engine.dispose()


def test_a_change_made_by_another_process_reaches_a_watcher_within_a_second(
    db_url: str, switches: KillSwitches
) -> None:
    # On PostgreSQL the poll interval is far longer than a second: only LISTEN/NOTIFY can win.
    on_pg = db_url.startswith("postgresql")
    received: list[tuple[float, dict[str, KillSwitch]]] = []
    changed = threading.Event()

    def callback(state: dict[str, KillSwitch]) -> None:
        received.append((time.time(), state))
        changed.set()

    watcher = switches.watch(callback, poll_interval_s=10.0 if on_pg else 0.25)
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_flip_switches, args=(db_url, go, out), daemon=True)
    proc.start()
    latencies = []
    try:
        assert watcher.mode == ("listen" if on_pg else "poll")
        for _ in range(3):
            changed.clear()
            go.set()
            _, active, t0, _ = out.get(timeout=30)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                assert changed.wait(max(0.0, deadline - time.monotonic()))
                changed.clear()
                t_seen, state = received[-1]
                if ("agent:support-triage" in state) == active:
                    break
            latencies.append(t_seen - t0)
    finally:
        watcher.stop()
        proc.join(10)
    assert proc.exitcode == 0
    assert max(latencies) < 1.0, latencies


def test_a_watcher_that_cannot_listen_falls_back_to_polling(
    db_url: str, switches: KillSwitches, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite watchers always poll")
    import psycopg

    def refuse(*_: Any, **__: Any) -> Any:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", refuse)
    seen: list[dict[str, KillSwitch]] = []
    watcher = switches.watch(seen.append, poll_interval_s=0.05)
    try:
        assert watcher.mode == "poll"
        switches.set("global", active=True, by="oncall")
        deadline = time.monotonic() + 5
        while "global" not in seen[-1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "global" in seen[-1]
    finally:
        watcher.stop()


# --- decision log --------------------------------------------------------------------------


@pytest.fixture
def log(engine: Engine) -> DecisionLog:
    return DecisionLog(engine)


def decision(i: int, **kw: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "decision_id": uuid.uuid4().hex, "ts_ns": time.time_ns(), "trace_id": f"{i % 3:032x}",
        "span_id": f"{i:016x}", "session_id": f"s-{i % 2}", "agent": "support-triage", "action": "tool",
        "target": "refund", "effect": "deny" if i % 4 == 0 else "allow", "enforced": i % 5 != 0,
        "rule_id": "r1", "policy_hash": "p" * 64, "input_digest": "d" * 64, "reasons": [f"reason {i}"],
    }
    fields.update(kw)
    return DecisionRecord(**fields)


def tamper(log: DecisionLog, sql: str, **params: Any) -> None:
    with log.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_appended_decisions_are_numbered_in_order_and_the_chain_verifies(log: DecisionLog) -> None:
    assert log.verify().ok and log.verify().checked == 0 and log.head() == (0, GENESIS_HASH)
    assert log.append([decision(i) for i in range(1, 4)]) == [1, 2, 3]
    assert log.append([decision(4)]) == [4]
    assert log.append([]) == []
    rows = list(reversed(log.list()))
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    assert log.head() == (4, rows[-1]["hash"])
    assert rows[0]["reasons"] == ["reason 1"] and rows[0]["enforced"] is True
    assert log.verify() == log.verify().__class__(ok=True, checked=4, problems=[], first_bad_seq=None)


def test_appending_a_decision_again_returns_its_seq_instead_of_a_duplicate(log: DecisionLog) -> None:
    first = decision(1)
    assert log.append([first, decision(2)]) == [1, 2]
    assert log.append([first, decision(3)]) == [1, 3]
    assert log.append([first, decision(4), first]) == [1, 4, 1]
    repeated = decision(5)
    assert log.append([repeated, repeated]) == [5, 5]
    assert log.verify().checked == 5


def test_decisions_are_listed_newest_first_filtered_and_paged(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 11)])
    assert [r["seq"] for r in log.list(limit=3)] == [10, 9, 8]
    assert [r["seq"] for r in log.list(limit=3, before_seq=8)] == [7, 6, 5]
    assert [r["seq"] for r in log.list(session_id="s-1")] == [9, 7, 5, 3, 1]
    assert [r["seq"] for r in log.list(effect="deny")] == [8, 4]
    assert [r["seq"] for r in log.list(trace_id=f"{2:032x}")] == [8, 5, 2]
    shadow = log.list(limit=10)[-5]  # seq 5
    assert shadow["seq"] == 5 and shadow["enforced"] is False


def test_verify_walks_the_chain_in_chunks(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 11)])
    assert log.verify(chunk_size=3).checked == 10
    tamper(log, "UPDATE decisions SET target = 'wire_money' WHERE seq = 7")
    result = log.verify(chunk_size=3)
    assert result.checked == 10 and result.first_bad_seq == 7


def test_verify_detects_an_edited_field(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 6)])
    tamper(log, "UPDATE decisions SET effect = 'allow' WHERE seq = 4")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4
    assert result.problems == ["seq 4: content does not match its hash: the row was edited"]


def test_verify_reports_a_garbled_row_instead_of_crashing(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 4)])
    tamper(log, "UPDATE decisions SET reasons = 'not json' WHERE seq = 2")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2 and result.checked == 3


def test_verify_detects_an_edit_whose_hash_was_recomputed(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 6)])
    tamper(log, "UPDATE decisions SET reasons = '[]', hash = :h WHERE seq = 2", h="c" * 64)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert any("seq 3: prev_hash does not match" in p for p in result.problems)


def test_verify_detects_a_row_deleted_from_the_middle(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 6)])
    tamper(log, "DELETE FROM decisions WHERE seq = 3")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3 and result.checked == 4
    assert "seq 3 missing: rows were deleted" in result.problems


def test_verify_detects_deleted_tail_rows(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 6)])
    tamper(log, "DELETE FROM decisions WHERE seq >= 4")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4
    assert result.problems == ["the head records seq 5 but the log ends at seq 3: the last rows were deleted"]


def test_verify_detects_an_inserted_row(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 6)])
    last = log.list(limit=1)[0]
    forged = {**last, "seq": 6, "decision_id": "forged", "prev_hash": last["hash"], "hash": "f" * 64,
              "reasons": "[]", "effect": "allow"}
    cols = ", ".join(forged)
    tamper(log, f"INSERT INTO decisions ({cols}) VALUES ({', '.join(':' + c for c in forged)})", **forged)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 6
    assert "the log ends at seq 6 but the head records seq 5: rows were appended outside the log" in result.problems


def test_verify_detects_a_row_slipped_in_before_the_first(log: DecisionLog) -> None:
    log.append([decision(i) for i in range(1, 3)])
    first = log.list()[-1]
    forged = {**first, "seq": 0, "decision_id": "forged", "reasons": "[]"}
    cols = ", ".join(forged)
    tamper(log, f"INSERT INTO decisions ({cols}) VALUES ({', '.join(':' + c for c in forged)})", **forged)
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 0


def _append_worker(url: str, worker: int, start_at: float) -> list[int]:
    engine = open_engine(url)
    try:
        log = DecisionLog(engine)
        rng = random.Random(worker)
        _sleep_until(start_at)
        seqs: list[int] = []
        for batch in range(25):
            seqs += log.append([decision(worker * 1000 + batch * 10 + j, agent=f"w{worker}")
                                for j in range(rng.randint(1, 4))])
        return seqs
    finally:
        engine.dispose()


def test_four_processes_appending_at_once_keep_one_unbroken_chain(
    db_url: str, log: DecisionLog, processes: Workers
) -> None:
    done = processes.run(_append_worker, [(db_url, w, time.time() + 0.5) for w in range(4)])
    assert len({pid for pid, _ in done}) == 4
    per_worker = [seqs for _, seqs in done]
    all_seqs = sorted(s for seqs in per_worker for s in seqs)
    assert all_seqs == list(range(1, len(all_seqs) + 1))  # no seq given twice, none skipped
    assert all(seqs == sorted(seqs) for seqs in per_worker)
    result = log.verify(chunk_size=50)
    assert result.ok, result.problems
    assert result.checked == len(all_seqs) and log.head()[0] == len(all_seqs)


def test_the_fast_chain_encoding_is_byte_identical_to_rfc_8785() -> None:
    """chain_hash encodes with orjson for speed; verifiers elsewhere use RFC 8785."""
    import random

    import rfc8785

    from proctor.store.decisions import _canonical

    rnd = random.Random(8785)
    alphabet = [chr(i) for i in range(0x80)] + ["é", "€", "𝄞", "\u2028", "\u2029", "\ufeff", "中"]
    for _ in range(5000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 16)))
        doc = {"decision_id": text, "agent": None, "enforced": rnd.random() < 0.5,
               "reasons": [text, "x"], "seq": rnd.randint(0, 2**53 - 1), "ts_ns": str(rnd.getrandbits(63))}
        assert _canonical(doc) == rfc8785.dumps(doc)
