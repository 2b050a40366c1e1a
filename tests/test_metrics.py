"""Prometheus metrics and the decision-log feed, as a scraper and an alert engine see them.

Spans go in over OTLP, decisions and approvals are made through the HTTP decision API, and
``GET /metrics`` is parsed with prometheus_client's own parser: the numbers a dashboard shows
are the numbers of what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from proctor.core import Span
from proctor.server import create_app
from proctor.store import open_engine
from proctor.store.decisions import DecisionLog, DecisionRecord
from proctor.telemetry.feeds import DecisionFeed
from proctor.telemetry.metrics import OTHER, ProctorMetrics

from conftest import wait_until
from spanfactory import agent_trace, request

PB = {"content-type": "application/x-protobuf"}
POLICY = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: metrics-test, version: "1"}
spec:
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools:
    - {name: "crm.*", side_effect: read}
    - {name: issue_refund, side_effect: irreversible}
    - {name: send_email, side_effect: external}
  rules:
    - {id: refunds-small, tools: issue_refund, when: "args.amount_usd <= 50", effect: allow}
    - {id: refunds-large, tools: issue_refund, when: "args.amount_usd > 50", effect: require_approval}
    - {id: same-call, kind: loop, detector: repeat, threshold: 3, window: 10, effect: terminate_session}
"""
S = {"session_id": "sess-gov-1", "agent": "support-bot", "environment": "prod"}

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(c: TestClient) -> Samples:
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return parse(r.text)


def value(m: Samples, name: str, **labels: str) -> float:
    return m.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def label_values(m: Samples, name: str, label: str) -> set[str]:
    return {dict(k)[label] for k in m.get(name, {}) if label in dict(k)}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with TestClient(create_app(db_url, policy=str(policy))) as c:
        yield c


def metrics_of(c: TestClient) -> ProctorMetrics:
    m = c.app.state.proctor.metrics  # type: ignore[attr-defined]
    assert isinstance(m, ProctorMetrics)
    return m


def send(c: TestClient, spans: list[Any], **kw: Any) -> None:
    assert c.post("/v1/traces", content=request(spans, **kw), headers=PB).status_code == 200


def guard_tool(c: TestClient, tool: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = c.post("/api/guard/tool", json={**S, "tool": tool, "args": args, **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def settle_decisions(c: TestClient) -> None:
    """Wait until the guard's decisions are in the log, then have the feed hand them on."""
    state = c.app.state.proctor  # type: ignore[attr-defined]
    assert state.guard.flush(5.0)
    state.decisions.poll_once()


# --- spans ----------------------------------------------------------------------------------


def test_llm_and_tool_spans_are_counted_per_agent_version_model_and_tool(client: TestClient) -> None:
    tid1, support = agent_trace(agent="support", session="sess-a", model="gpt-4o-mini", tool="lookup_customer",
                                fail_tool=True)
    tid2, billing = agent_trace(agent="billing", session="sess-b", model="gpt-4o", tool="refund")
    send(client, support + billing, resource={"gen_ai.agent.version": "1.4.0"})

    m = scrape(client)
    assert value(m, "proctor_spans_ingested_total") == 8
    assert value(m, "proctor_ingest_lag_seconds_count") == 8
    assert abs(value(m, "proctor_last_ingest_timestamp_seconds") - time.time()) < 60
    sup = {"agent": "support", "version": "1.4.0", "model": "gpt-4o-mini"}
    bil = {"agent": "billing", "version": "1.4.0", "model": "gpt-4o"}
    assert value(m, "proctor_llm_calls_total", **sup) == 2 and value(m, "proctor_llm_calls_total", **bil) == 2
    assert value(m, "proctor_llm_tokens_total", **sup, direction="input") == 300  # 100 + 200
    assert value(m, "proctor_llm_tokens_total", **sup, direction="output") == 40
    for tid, labels in ((tid1, sup), (tid2, bil)):  # the same cost the trace view shows
        trace_cost = client.get(f"/api/traces/{tid.hex()}").json()["trace"]["cost_usd"]
        assert trace_cost > 0
        assert value(m, "proctor_llm_cost_usd_total", **labels) == pytest.approx(trace_cost)
    assert value(m, "proctor_tool_calls_total", tool="lookup_customer", agent="support") == 1
    assert value(m, "proctor_tool_failures_total", tool="lookup_customer", agent="support") == 1
    assert value(m, "proctor_tool_calls_total", tool="refund", agent="billing") == 1
    assert ("proctor_tool_failures_total" in m
            and value(m, "proctor_tool_failures_total", tool="refund", agent="billing") == 0)
    assert not any(name.endswith("_created") for name in m)

    everything = {v for series in m.values() for key in series for _, v in key}
    assert not everything & {"sess-a", "sess-b", tid1.hex(), tid2.hex()}  # never an id as a label


def test_the_ingest_counter_equals_the_spans_sent(client: TestClient) -> None:
    sent = 0
    for i in range(5):
        spans = [s for _ in range(i + 1) for s in agent_trace(session=f"s-{i}")[1]]
        send(client, spans)
        sent += len(spans)
    m = scrape(client)
    assert value(m, "proctor_spans_ingested_total") == sent == 60
    assert value(m, "proctor_ingest_lag_seconds_count") == sent
    assert value(m, "proctor_sessions_started_total", agent="support") == 5


def test_a_session_is_active_until_idle_then_its_duration_and_cost_are_observed(client: TestClient) -> None:
    metrics = metrics_of(client)
    tid_a, a1 = agent_trace(agent="support", session="sess-a")
    send(client, a1)
    send(client, agent_trace(agent="support", session="sess-b")[1])
    send(client, agent_trace(agent="billing", session="sess-c")[1])
    m = scrape(client)
    assert value(m, "proctor_sessions_started_total", agent="support") == 2
    assert value(m, "proctor_sessions_active", agent="support") == 2
    assert value(m, "proctor_sessions_active", agent="billing") == 1

    now = time.time_ns()
    assert metrics.tick(now + 299 * 10**9) == 0  # not idle long enough yet
    # sess-a gets a second trace; it still ends once idle, as one session
    _, a2 = agent_trace(agent="support", session="sess-a", start_ns=now)
    send(client, a2)
    assert metrics.tick(time.time_ns() + 301 * 10**9) == 3

    m = scrape(client)
    assert value(m, "proctor_sessions_active", agent="support") == 0
    assert value(m, "proctor_sessions_active", agent="billing") == 0
    assert value(m, "proctor_sessions_ended_total", agent="support") == 2
    assert value(m, "proctor_sessions_ended_total", agent="billing") == 1
    assert value(m, "proctor_session_duration_seconds_count", agent="support") == 2
    assert value(m, "proctor_session_duration_seconds_count", agent="billing") == 1
    # sess-a ran from its first trace's start to its second's end; sess-b for one trace (100 ms)
    a_duration = (a2[0].end_time_unix_nano - a1[0].start_time_unix_nano) / 1e9
    assert value(m, "proctor_session_duration_seconds_sum", agent="support") == pytest.approx(a_duration + 0.1)
    trace_cost = client.get(f"/api/traces/{tid_a.hex()}").json()["trace"]["cost_usd"]
    assert value(m, "proctor_session_cost_usd_count", agent="support") == 2
    assert value(m, "proctor_session_cost_usd_sum", agent="support") == pytest.approx(3 * trace_cost)  # a: 2, b: 1
    assert metrics.tick(time.time_ns() + 10**12) == 0  # ended once


def test_active_sessions_are_bounded_and_the_least_recently_seen_end_first() -> None:
    metrics = ProctorMetrics(max_sessions=10)
    t0 = time.time_ns()
    for i in range(15):
        metrics.on_spans([Span("a" * 32, f"{i:016x}", "step", t0, t0 + 10**9, kind="llm", agent_name="bot",
                               session_id=f"s-{i}", cost_usd=0.01)])
    m = parse(metrics.render()[0].decode())
    assert value(m, "proctor_sessions_active", agent="bot") == 10
    assert value(m, "proctor_sessions_ended_total", agent="bot") == 5
    assert value(m, "proctor_session_cost_usd_sum", agent="bot") == pytest.approx(0.05)
    assert sorted(metrics._sessions) == sorted(f"s-{i}" for i in range(5, 15))


# --- cardinality ----------------------------------------------------------------------------


def test_label_values_are_capped_and_session_ids_never_become_labels() -> None:
    metrics = ProctorMetrics(max_label_values=200)
    t0 = time.time_ns()
    batch = [Span("b" * 32, f"{i:016x}", "tool", t0, t0 + 1000, kind="tool", tool_name=f"tool-{i}",
                  agent_name="bot", session_id=f"session-{i}", status="error" if i % 2 else "ok")
             for i in range(300)]
    batch.append(Span("b" * 32, "f" * 16, "chat", t0, t0 + 1000, kind="llm", model=None, agent_name=""))
    metrics.on_spans(batch)
    m = parse(metrics.render()[0].decode())

    tools = label_values(m, "proctor_tool_calls_total", "tool")
    assert OTHER in tools and len(tools - {OTHER}) == 200
    assert value(m, "proctor_tool_calls_total", tool=OTHER, agent="bot") == 100
    assert sum(m["proctor_tool_calls_total"].values()) == 300
    assert sum(m["proctor_tool_failures_total"].values()) == 150
    assert label_values(m, "proctor_tool_failures_total", "tool") == tools  # the same names in both
    assert value(m, "proctor_llm_calls_total", agent="unknown", version="unknown", model="unknown") == 1
    everything = {v for series in m.values() for key in series for _, v in key}
    assert not {v for v in everything if v.startswith("session-")}
    assert value(m, "proctor_sessions_active", agent="bot") == 300  # counted, but not as labels


# --- decisions and approvals ----------------------------------------------------------------


def test_decisions_made_through_the_decision_api_are_counted(client: TestClient) -> None:
    assert guard_tool(client, "issue_refund", {"amount_usd": 20})["permitted"] is True
    assert guard_tool(client, "issue_refund", {"amount_usd": 30})["permitted"] is True
    assert guard_tool(client, "send_email", {"to": "a@example.com"})["permitted"] is False
    held = guard_tool(client, "issue_refund", {"amount_usd": 80})
    assert held["decision"]["effect"] == "require_approval"
    settle_decisions(client)

    m = scrape(client)
    tool = {"action": "tool_call", "enforced": "true"}
    assert value(m, "proctor_decisions_total", effect="allow", rule="refunds-small", **tool) == 2
    assert value(m, "proctor_decisions_total", effect="deny", rule="default", **tool) == 1
    assert value(m, "proctor_decisions_total", effect="require_approval", rule="refunds-large", **tool) == 1
    assert sum(m["proctor_decisions_total"].values()) == 4

    # released by a human: the approval's id is in its rule id, but not in the label
    approval_id = held["approval_id"]
    assert client.post(f"/api/approvals/{approval_id}/approve", json={"by": "alice"}).status_code == 200
    assert guard_tool(client, "issue_refund", {"amount_usd": 80}, approval_id=approval_id)["permitted"] is True
    settle_decisions(client)
    m = scrape(client)
    assert value(m, "proctor_decisions_total", effect="allow", rule="approval", **tool) == 1
    assert not any(approval_id in v for key in m["proctor_decisions_total"] for _, v in key)


def test_a_loop_breaker_decision_counts_as_a_loop_detection(client: TestClient) -> None:
    for _ in range(2):
        permit = guard_tool(client, "crm.lookup", {"id": 42})["permit_id"]
        r = client.post("/api/guard/tool/result", json={"permit_id": permit, "result": {"name": "Ada"}})
        assert r.status_code == 200
    third = guard_tool(client, "crm.lookup", {"id": 42})
    assert third["terminated"] is True and third["decision"]["rule_id"] == "same-call"
    settle_decisions(client)
    m = scrape(client)
    assert value(m, "proctor_loop_detections_total", agent="support-bot", rule="same-call") == 1
    assert value(m, "proctor_decisions_total", effect="terminate_session", rule="same-call", action="tool_call",
                 enforced="true") == 1


def test_the_pending_approval_gauges_and_the_wait_histogram(client: TestClient) -> None:
    m = scrape(client)
    assert value(m, "proctor_approvals_pending") == 0
    assert value(m, "proctor_approval_oldest_pending_seconds") == 0

    first = guard_tool(client, "issue_refund", {"amount_usd": 80})["approval_id"]
    time.sleep(0.05)
    guard_tool(client, "issue_refund", {"amount_usd": 90})
    m = scrape(client)
    assert value(m, "proctor_approvals_pending") == 2
    assert 0.05 <= value(m, "proctor_approval_oldest_pending_seconds") < 60
    assert value(m, "proctor_approval_wait_seconds_count") == 0

    assert client.post(f"/api/approvals/{first}/deny", json={"by": "bob", "reason": "no"}).status_code == 200
    m = scrape(client)
    assert value(m, "proctor_approvals_pending") == 1
    assert value(m, "proctor_approval_wait_seconds_count") == 1
    assert 0.05 <= value(m, "proctor_approval_wait_seconds_sum") < 60
    m = scrape(client)
    assert value(m, "proctor_approval_wait_seconds_count") == 1  # each decision observed once


def test_a_broken_database_skips_the_approval_gauges_and_keeps_the_rest(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    metrics = ProctorMetrics(engine)
    m = parse(metrics.render()[0].decode())
    assert "proctor_approvals_pending" not in m
    assert value(m, "proctor_approval_wait_seconds_count") == 0 and "proctor_spans_ingested_total" in m


# --- the decision feed ----------------------------------------------------------------------


def _record(i: int, **kw: Any) -> DecisionRecord:
    return DecisionRecord(decision_id=f"d-{i}", ts_ns=time.time_ns(), trace_id=None, span_id=None,
                          session_id="s-1", agent="bot", action="tool", target="crm.lookup", effect="allow",
                          reasons=[f"reason {i}"], **kw)


@pytest.fixture
def decision_log(db_url: str) -> Iterator[DecisionLog]:
    engine = open_engine(db_url)
    yield DecisionLog(engine)
    engine.dispose()


def test_the_feed_delivers_rows_in_seq_order_once(decision_log: DecisionLog) -> None:
    decision_log.append([_record(i) for i in range(5)])
    feed = DecisionFeed(decision_log.engine, from_start=True, batch=2)
    got: list[dict[str, Any]] = []
    feed.subscribe(got.extend)
    assert [feed.poll_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [r["seq"] for r in got] == [1, 2, 3, 4, 5] and feed.last_seq == 5
    row = got[0]
    assert row["decision_id"] == "d-0" and row["reasons"] == ["reason 0"] and row["enforced"] is True
    assert {"ts_ns", "trace_id", "span_id", "session_id", "agent", "action", "target", "effect", "rule_id",
            "policy_hash", "rule_kind"} <= set(row)
    assert "hash" not in row and "prev_hash" not in row

    decision_log.append([_record(5, enforced=False, rule_id="r", rule_kind="loop")])
    assert feed.poll_once() == 1
    assert (got[-1]["seq"], got[-1]["enforced"], got[-1]["rule_kind"]) == (6, False, "loop")


def test_a_feed_not_from_start_sees_only_decisions_made_after_it(decision_log: DecisionLog) -> None:
    decision_log.append([_record(i) for i in range(3)])
    feed = DecisionFeed(decision_log.engine)
    assert feed.last_seq == 3 and feed.poll_once() == 0
    got: list[int] = []
    feed.subscribe(lambda rows: got.extend(r["seq"] for r in rows))
    decision_log.append([_record(3), _record(4)])
    assert feed.poll_once() == 2 and got == [4, 5]


def test_before_migration_0004_rows_come_without_a_rule_kind(decision_log: DecisionLog) -> None:
    with decision_log.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN rule_kind")
        conn.exec_driver_sql(
            "INSERT INTO decisions (seq, decision_id, ts_ns, action, effect, enforced, reasons, prev_hash, hash)"
            " VALUES (1, 'd-old', 1, 'tool_call', 'deny', true, '[]', 'p', 'h')")
    feed = DecisionFeed(decision_log.engine, from_start=True)
    got: list[dict[str, Any]] = []
    feed.subscribe(got.extend)
    assert feed.poll_once() == 1
    assert (got[0]["decision_id"], got[0]["enforced"], got[0]["rule_kind"]) == ("d-old", True, None)


def test_the_feed_survives_a_failing_subscriber_and_runs_in_the_background(
    decision_log: DecisionLog, caplog: pytest.LogCaptureFixture
) -> None:
    feed = DecisionFeed(decision_log.engine, poll_s=0.02)
    got: list[int] = []
    threads: set[str] = set()

    def broken(_rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("subscriber bug")

    def good(rows: list[dict[str, Any]]) -> None:
        threads.add(threading.current_thread().name)
        got.extend(r["seq"] for r in rows)

    feed.subscribe(broken)
    feed.subscribe(good)
    feed.start()
    try:
        with caplog.at_level(logging.ERROR, logger="proctor.telemetry.feeds"):
            decision_log.append([_record(0)])
            assert wait_until(lambda: got == [1], timeout=5)
            decision_log.append([_record(1), _record(2)])
            assert wait_until(lambda: got == [1, 2, 3], timeout=5)
        assert "subscriber bug" in caplog.text
        assert threads == {"proctor-decision-feed"}
    finally:
        feed.close()


def test_the_feed_outlives_an_unreachable_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    with caplog.at_level(logging.WARNING, logger="proctor.telemetry.feeds"):
        feed = DecisionFeed(engine)
        assert [feed.poll_once() for _ in range(3)] == [0, 0, 0]
    warnings = [r for r in caplog.records if "cannot read the decision log" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    (tmp_path / "missing").mkdir()
    real = open_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    DecisionLog(real).append([_record(0)])
    got: list[int] = []
    feed.subscribe(lambda rows: got.extend(r["seq"] for r in rows))
    # positioned at the end once it can read it (nobody could append while the database was away)
    assert feed.poll_once() == 0 and feed.last_seq == 1
    DecisionLog(real).append([_record(1)])
    assert feed.poll_once() == 1 and got == [2]
    real.dispose()
