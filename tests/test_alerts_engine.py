"""Alert rules on the live stream, as an operator meets them: rule files refused with file:line,
each built-in signal, the pending → firing → resolved lifecycle, deduplication, grouped
notifications, silences, and containment that really stops a session in a real guard.

Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from proctor.core import Span
from proctor.guard import Guard, SessionTerminated
from proctor.store import SpanStore
from proctor.store.alerts import AlertRecord, AlertStore
from proctor.store.approvals import ApprovalStore
from proctor.store.decisions import DecisionLog
from proctor.store.engine import open_engine
from proctor.telemetry.containment import Containment
from proctor.telemetry.engine import NS, AlertEngine, Baselines
from proctor.telemetry.rules import AlertRule, AlertRulesError, RuleSet, load_rules_text
from proctor.telemetry.service import StorePoller

HEAD = """apiVersion: proctor/v1
kind: AlertRules
metadata: {name: test}
spec:
  notifiers: [{id: log, type: log}]
  defaults: {notify: [log]}
  rules:
"""

NOW = 1_800_000_000 * NS


def rules(*lines: str) -> RuleSet:
    return load_rules_text(HEAD + "".join(f"    - {line}\n" for line in lines), "rules.yaml")


def span(**kw: Any) -> Span:
    d: dict[str, Any] = dict(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), name="call",
                             start_ns=NOW - NS, end_ns=NOW, kind="llm")
    d.update(kw)
    return Span(**d)


class Sent:
    """The dispatch callback: what would have been notified, grouped as the engine groups it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[dict[str, Any]]]] = []

    def __call__(self, recs: list[AlertRecord], rule: AlertRule, status: str) -> None:
        self.calls.append((rule.id, status, [r.group for r in recs]))


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


# -- rule files -------------------------------------------------------------------------------


def test_a_bad_rule_file_is_refused_whole_with_every_problem_at_its_line() -> None:
    with pytest.raises(AlertRulesError) as err:
        rules(
            '{id: a, signal: session_cost_rate, when: "value >"}',
            '{id: b, signal: no_such_signal, when: "value > 1"}',
            '{id: c, signal: spans, filter: "span.kind == 1 &&", when: "value > 1"}',
            '{id: d, signal: tool_failure_rate, when: "value > 0.5", notify: [pager]}',
            '{id: e, signal: session_cost_rate, when: "value > 1", group_by: [agent]}',
            '{id: f, signal: tool_failure_rate, when: "cost > 1"}',
            '{id: g, signal: tool_failure_rate, when: "value > 1", action: terminate_session}',
            '{id: h, signal: budget, window: 5m, when: "value > 0.8"}',
        )
    text = str(err.value)
    for line, fragment in [
        (8, "spec.rules[0].when: invalid condition"), (9, "spec.rules[1].signal"), (10, "invalid filter"),
        (11, "unknown notifier 'pager'"), (12, "always grouped by session"), (13, "unknown variable 'cost'"),
        (14, "terminate_session needs the rule grouped by session"), (15, "budget is not windowed"),
    ]:
        assert f"rules.yaml:{line}: " in text and fragment in text, (line, fragment, text)


def test_rule_ids_are_unique_and_an_empty_file_is_refused() -> None:
    with pytest.raises(AlertRulesError, match="duplicate rule id 'a'"):
        rules('{id: a, signal: loop_detected}', '{id: a, signal: loop_detected}')
    with pytest.raises(AlertRulesError, match="AlertRules"):
        load_rules_text("", "empty.yaml")


# -- signals and lifecycle --------------------------------------------------------------------


def test_a_cost_spiral_fires_once_per_session_and_resolves_when_the_window_slides() -> None:
    sent = Sent()
    eng = AlertEngine(rules('{id: spiral, signal: session_cost_rate, window: 1m, when: "value > 1.0", '
                            'summary: "session {session} of {agent} spends ${value:.2f}/min"}'), dispatch=sent)
    out = eng.process_spans([span(session_id="s1", agent_name="triage", cost_usd=0.6),
                             span(session_id="s2", agent_name="triage", cost_usd=0.2)], NOW)
    assert out.fired == []  # $0.60/min is under the line
    out = eng.process_spans([span(session_id="s1", agent_name="triage", cost_usd=0.6),
                             span(session_id="s3", agent_name="kb", cost_usd=2.0)], NOW + NS)
    assert sorted(r.group["session"] for r in out.fired) == ["s1", "s3"]
    s1 = next(r for r in out.fired if r.group["session"] == "s1")
    assert s1.summary == "session s1 of triage spends $1.20/min" and s1.labels["agent"] == "triage"
    assert len(s1.evidence["trace_ids"]) == 2
    # the two fired together: one notification for both
    assert sent.calls == [("spiral", "firing", [{"session": "s1"}, {"session": "s3"}])]
    # more spending in a firing session: no new alert, no new notification (deduplication)
    assert eng.process_spans([span(session_id="s1", agent_name="triage", cost_usd=1.0)], NOW + 2 * NS).fired == []
    assert len(sent.calls) == 1 and len(eng.open_alerts()) == 2
    out = eng.tick(NOW + 70 * NS)  # a minute later the window holds nothing
    assert sorted(r.group["session"] for r in out.resolved) == ["s1", "s3"]
    assert sent.calls[-1][:2] == ("spiral", "resolved") and eng.open_alerts() == []


def test_an_alert_with_for_is_pending_first_and_fires_only_if_it_keeps_holding() -> None:
    sent = Sent()
    eng = AlertEngine(rules('{id: failing, signal: tool_failure_rate, window: 5m, for: 30s, '
                            'when: "count >= 4 && value > 0.5"}'), dispatch=sent)
    bad = [span(kind="tool", tool_name="crm.lookup", status="error") for _ in range(4)]
    out = eng.process_spans(bad, NOW)
    assert [r.status for r in out.pending] == ["pending"] and out.fired == []
    assert eng.tick(NOW + 10 * NS).fired == []
    out = eng.tick(NOW + 31 * NS)
    assert [(r.rule_id, r.group, r.value) for r in out.fired] == [("failing", {"tool": "crm.lookup"}, 1.0)]
    # a flapping one that recovers before `for` never fires and is never notified
    eng2 = AlertEngine(rules('{id: failing, signal: tool_failure_rate, for: 30s, when: "count >= 4 && value > 0.5"}'),
                       dispatch=sent)
    eng2.process_spans(bad, NOW)
    out = eng2.process_spans([span(kind="tool", tool_name="crm.lookup") for _ in range(6)], NOW + 5 * NS)
    assert [r.status for r in out.resolved] == ["resolved"] and out.resolved[0].fired_ns is None
    assert len(sent.calls) == 1


def test_span_and_decision_filters_count_what_they_select_per_group() -> None:
    eng = AlertEngine(rules(
        '{id: slow-llm, signal: spans, filter: "span.kind == \'llm\' && span.duration_s > 5", '
        'group_by: [agent], when: "value >= 2"}',
        '{id: denials, signal: decisions, filter: "decision.effect == \'deny\'", group_by: [agent], when: "value >= 3"}',
    ))
    slow = dict(start_ns=NOW - 6 * NS)
    out = eng.process_spans([span(agent_name="a", **slow), span(agent_name="b", **slow), span(agent_name="a"),
                             span(agent_name="a", kind="tool", **slow)], NOW)
    assert out.fired == []
    out = eng.process_spans([span(agent_name="a", **slow)], NOW + NS)
    assert [(r.rule_id, r.group) for r in out.fired] == [("slow-llm", {"agent": "a"})]
    rows = [{"decision_id": f"d{i}", "ts_ns": NOW, "agent": "a", "effect": e, "rule_id": "r", "enforced": True}
            for i, e in enumerate(["deny", "deny", "allow", "deny"])]
    out = eng.process_decisions(rows, NOW)
    assert [(r.rule_id, r.group, r.value) for r in out.fired] == [("denials", {"agent": "a"}, 3.0)]
    assert out.fired[0].evidence["decision_ids"] == ["d0", "d1", "d3"]


def test_session_cost_against_the_agents_own_baseline(engine: Engine) -> None:
    # 25 past sessions of "triage" costing $0.10-$0.34 make its baseline; "kb" has too few
    store = SpanStore(engine)
    past = [span(session_id=f"old-{i}", agent_name="triage", cost_usd=0.10 + i * 0.01, kind="llm",
                 start_ns=NOW - 3600 * NS, end_ns=NOW - 3500 * NS) for i in range(25)]
    past += [span(session_id="kb-1", agent_name="kb", cost_usd=5.0, kind="llm", start_ns=NOW - 3600 * NS,
                  end_ns=NOW - 3500 * NS)]
    store.write(past)
    eng = AlertEngine(rules('{id: outlier, signal: session_cost, when: "value > baseline * 3.0", '
                            'summary: "{session} cost ${value:.2f}, {ratio:.1f}x the p99"}'),
                      baselines=Baselines(engine, clock=lambda: NOW))
    out = eng.process_spans([span(session_id="new-1", agent_name="triage", cost_usd=0.5)], NOW)
    assert out.fired == []  # $0.50 < 3 x p99 ($0.34)
    out = eng.process_spans([span(session_id="new-1", agent_name="triage", cost_usd=0.6),
                             span(session_id="new-2", agent_name="kb", cost_usd=50.0)], NOW + NS)
    assert [(r.group["session"], r.summary) for r in out.fired] == [("new-1", "new-1 cost $1.10, 3.3x the p99")]
    assert eng.condition_errors == 1  # kb: no baseline yet, so its condition cannot hold


def test_a_long_session_is_caught_by_the_clock_not_only_by_its_spans() -> None:
    eng = AlertEngine(rules('{id: long, signal: session_duration, when: "value > 120"}'))
    assert eng.process_spans([span(session_id="s1", agent_name="a", start_ns=NOW - 10 * NS)], NOW).fired == []
    out = eng.tick(NOW + 115 * NS)  # no span for two minutes: the session is still running
    assert [(r.group, r.value) for r in out.fired] == [({"session": "s1"}, 125.0)]


def test_polled_signals_approval_backlog_budget_use_and_ingest_silence(engine: Engine) -> None:
    eng = AlertEngine(rules(
        '{id: backlog, signal: approval_backlog, when: "value >= 1 && oldest_s >= 0"}',
        '{id: budget-80, signal: budget, when: "value >= 0.8"}',
        '{id: stalled, signal: ingest_stalled, when: "value > 60"}',
    ))
    eng.poll = StorePoller(engine, lambda: eng.last_ingest_ns)
    ApprovalStore(engine).request(digest="d" * 64, tool="issue_refund", arguments={"amount_usd": 80}, policy_hash="p",
                                  session_id="s1", agent="refund-agent", rule_id="big", message="", ttl_s=600)
    from proctor.store.budgets import BudgetLedger

    ledger = BudgetLedger(engine)
    r = ledger.reserve({("session:s1", "usd"): 0.85}, limits={("session:s1", "usd"): 1.0})
    assert not hasattr(r, "part")
    ledger.settle(r, {("session:s1", "usd"): 0.85})  # type: ignore[arg-type]
    now = time.time_ns()
    eng.process_spans([span()], now)
    out = eng.tick(now)
    assert sorted((a.rule_id, a.group.get("budget")) for a in out.fired) == [
        ("backlog", None), ("budget-80", "session:s1 usd")]
    out = eng.tick(now + 61 * NS)
    assert [a.rule_id for a in out.fired] == ["stalled"]


# -- silences, storage, containment -------------------------------------------------------------


def test_a_silenced_alert_is_recorded_but_not_notified(engine: Engine) -> None:
    store, sent = AlertStore(engine), Sent()
    eng = AlertEngine(rules('{id: spiral, signal: session_cost_rate, when: "value > 1"}'), store=store, dispatch=sent)
    silence = store.add_silence({"rule": "spi*", "session": "s1"}, duration_s=3600, comment="known", by="alice")
    eng.set_silences(store.silences(active_at=time.time_ns()))
    now = time.time_ns()
    eng.process_spans([span(session_id="s1", cost_usd=5.0), span(session_id="s2", cost_usd=5.0)], now)
    assert sent.calls == [("spiral", "firing", [{"session": "s2"}])]
    firing = {a.group["session"]: a for a in store.list(status="firing")}
    assert firing["s1"].silenced_by == silence.id and firing["s2"].silenced_by is None
    assert [e["kind"] for e in store.events(firing["s1"].id)] == ["firing"]
    store.revoke_silence(silence.id)
    assert store.silences(active_at=time.time_ns()) == []


def test_containment_terminates_the_session_in_a_real_guard_and_is_recorded(engine: Engine, tmp_path: Path) -> None:
    bundle = tmp_path / "p.yaml"
    bundle.write_text("""
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: p, version: "1"}
spec:
  default_effect: allow
  tools: [{name: search, side_effect: read}, {name: refund, side_effect: irreversible}]
""")
    guard = Guard(bundle, engine, kill_poll_interval_s=0.05)
    recorded: list[Span] = []
    try:
        gs = guard.session("s-spiral", agent="researcher")
        guard.check_tool(gs, "search", {"q": "x"})  # runs
        store = AlertStore(engine)
        eng = AlertEngine(rules(
            '{id: spiral, signal: session_cost_rate, when: "value > 1", action: terminate_session}',
            '{id: refunds-fail, signal: tool_failure_rate, group_by: [tool, agent], when: "count >= 2 && value >= 1",'
            ' action: require_approval}'),
            store=store, contain=Containment(engine, record_span=recorded.append))
        offending = span(session_id="s-spiral", agent_name="researcher", cost_usd=3.0)
        [alert] = eng.process_spans([offending], time.time_ns()).fired
        assert alert.action == "terminate_session: kill switch session:s-spiral on"
        deadline = time.monotonic() + 5
        with pytest.raises(SessionTerminated):  # the guard sees the switch within its poll interval
            while time.monotonic() < deadline:
                guard.check_tool(gs, "search", {"q": "y"})
                time.sleep(0.05)
        # recorded: in the decision log (and the chain still verifies), as a span in the trace
        row = next(r for r in DecisionLog(engine).list(limit=20) if r["action"] == "alert")
        assert (row["rule_id"], row["effect"], row["rule_kind"], row["session_id"]) == (
            "alert:spiral", "terminate_session", "alert", "s-spiral")
        assert row["trace_id"] == offending.trace_id
        assert DecisionLog(engine).verify().ok
        [s] = recorded
        assert (s.trace_id, s.parent_span_id, s.name) == (offending.trace_id, None, "alert spiral")
        assert [e["kind"] for e in store.events(alert.id)] == ["firing", "action"]
        # require_approval: the agent's side-effecting calls now wait for a human
        gs2 = guard.session("s-other", agent="refunder")
        assert guard.check_tool(gs2, "refund", {"id": 1}).decision.effect == "allow"
        eng.process_spans([span(kind="tool", tool_name="refund", agent_name="refunder", status="error")
                           for _ in range(2)], time.time_ns())
        deadline = time.monotonic() + 5
        effect = "allow"
        while effect == "allow" and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                effect = guard.check_tool(gs2, "refund", {"id": 2}).decision.effect
            except Exception as e:  # ApprovalPending
                effect = getattr(getattr(e, "decision", None), "effect", "?")
        assert effect == "require_approval"
        assert guard.check_tool(gs2, "search", {"q": "reads still run"}).decision.effect == "allow"
    finally:
        guard.close()


def test_rule_kind_is_logged_so_loop_breakers_raise_loop_alerts(engine: Engine, tmp_path: Path) -> None:
    bundle = tmp_path / "p.yaml"
    bundle.write_text("""
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: p, version: "1"}
spec:
  default_effect: allow
  tools: [{name: search, side_effect: read}]
  rules:
    - {id: same-call, kind: loop, detector: repeat, threshold: 3, window: 10, effect: terminate_session}
""")
    guard = Guard(bundle, engine)
    try:
        gs = guard.session("s-loop", agent="researcher")
        with pytest.raises(SessionTerminated):
            for _ in range(5):
                guard.check_tool(gs, "search", {"q": "same"})
        guard.flush()
    finally:
        guard.close()
    rows = list(reversed(DecisionLog(engine).list(session_id="s-loop", limit=50)))
    assert {r["rule_kind"] for r in rows if r["rule_id"] == "same-call"} == {"loop"}
    eng = AlertEngine(rules('{id: loops, signal: loop_detected}'))
    out = eng.process_decisions(rows, time.time_ns())
    assert [(a.rule_id, a.group, a.labels.get("agent")) for a in out.fired] == [
        ("loops", {"session": "s-loop"}, "researcher")]


def test_the_published_rule_schema_is_the_one_the_loader_uses() -> None:
    import json

    published = json.loads((Path(__file__).parent.parent / "docs" / "alert-rules.schema.json").read_text())
    from proctor.telemetry.rules import RULES_SCHEMA

    assert published == RULES_SCHEMA, "regenerate docs/alert-rules.schema.json from telemetry/rules.py"


@pytest.mark.parametrize("source", [
    "value > 1", "value >= 2.5 && count >= 3", "value < 0.5", "count == 4", "value != 0",
    "agent == 'triage' && value > 1", "session != \"s1\"",
])
def test_simple_conditions_agree_with_cel(source: str) -> None:
    import cel

    from proctor.telemetry.rules import VARIABLES, AlertCondition

    cond = AlertCondition(source, VARIABLES)
    assert cond.fast is not None
    program = cel.compile(source)
    for obs in ({"value": 1.0, "count": 4, "agent": "triage", "session": "s1"},
                {"value": 2.5, "count": 3, "agent": "kb", "session": "s2"},
                {"value": 0.0, "count": 0, "agent": "triage", "session": "s1"},
                {"value": 7, "count": 5, "agent": "x", "session": "s3"}):
        assert cond.holds(obs) == program.execute(cel.Context(obs)), (source, obs)
