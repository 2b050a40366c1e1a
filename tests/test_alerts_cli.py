"""``proctor alerts`` as an operator types it: list and open alerts, silence them, lint rule files
and replay stored spans and decisions through them.

The commands work on the database directly; the data is what the server's alert engine and
guards would have written there (alerts with their events, spans, decisions).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

import proctor.telemetry.service as alert_service
from proctor.cli.main import app
from proctor.core import Span
from proctor.server import create_app
from proctor.store import SpanStore, open_engine
from proctor.store.alerts import AlertEvent, AlertRecord, AlertStore, new_id
from proctor.store.decisions import DecisionLog, DecisionRecord

from conftest import wait_until

pytestmark = pytest.mark.timeout(60)

runner = CliRunner()
WIDE = {"COLUMNS": "250"}

RULES = """\
apiVersion: proctor/v1
kind: AlertRules
metadata: {name: test}
spec:
  notifiers: [{id: log, type: log}]
  defaults: {notify: [log]}
  rules:
    - {id: cost-spiral, signal: session_cost_rate, window: 1m, when: "value > 0.5", severity: critical, summary: "session {session} spends ${value:.2f}/min"}
    - id: denials
      signal: decisions
      filter: 'decision.effect == "deny"'
      group_by: [agent]
      window: 5m
      when: "value >= 2"
      summary: "{agent}: {value:.0f} calls denied in 5m"
"""

BROKEN = """\
apiVersion: proctor/v1
kind: AlertRules
metadata: {name: broken}
spec:
  notifiers: [{id: log, type: log}]
  rules:
    - id: ok-rule
      signal: spans
      when: "value > 10"
      notify: [log]
    - id: bad-when
      signal: session_cost_rate
      when: "value >>> 1"
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_engine(db_url)
    yield e
    e.dispose()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=WIDE)
    return result.exit_code, result.output


def as_json(*args: str) -> Any:
    code, out = cli(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def record(rule: str, status: str, started_ns: int, session: str, *, trace_id: str | None = None,
           action: str | None = None) -> AlertRecord:
    return AlertRecord(
        id=new_id(), rule_id=rule, group_key=f"{rule}-{session}", group={"session": session}, status=status,
        severity="critical", summary=f"session {session} spends $0.80/min", value=0.8,
        labels={"session": session, "agent": "support"},
        evidence={"trace_ids": [trace_id] if trace_id else [], "span_ids": [], "decision_ids": []},
        started_ns=started_ns, updated_ns=started_ns, fired_ns=None if status == "pending" else started_ns,
        resolved_ns=started_ns + 60 * 10**9 if status == "resolved" else None, action=action)


def costly(session: str, cost: float, end_ns: int, agent: str = "support") -> Span:
    return Span(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), name="chat gpt-4o",
                start_ns=end_ns - 10_000_000, end_ns=end_ns, kind="llm", session_id=session, agent_name=agent,
                model="gpt-4o", cost_usd=cost, input_tokens=100, output_tokens=10)


def deny(engine: Engine, n: int, ts_ns: int, agent: str = "support") -> None:
    DecisionLog(engine).append([
        DecisionRecord(decision_id=f"d-{agent}-{ts_ns}-{i}", ts_ns=ts_ns + i, trace_id=None, span_id=None,
                       session_id="s-9", agent=agent, action="tool_call", target="issue_refund", effect="deny",
                       rule_id="refunds", reasons=["refunds: deny"])
        for i in range(n)])


# --- ls and show --------------------------------------------------------------------------------


def test_ls_lists_alerts_newest_first_with_filters(db_url: str, engine: Engine) -> None:
    now = time.time_ns()
    old = record("cost-spiral", "resolved", now - 3 * 3600 * 10**9, "s-old")
    cur = record("cost-spiral", "firing", now - 120 * 10**9, "s-cur", action="terminate_session: kill switch on")
    pend = record("loops", "pending", now - 30 * 10**9, "s-loop")
    AlertStore(engine).save([old, cur, pend])

    doc = as_json("alerts", "ls", "--db", db_url)
    assert [a["id"] for a in doc["alerts"]] == [pend.id, cur.id, old.id]
    assert [a["id"] for a in as_json("alerts", "ls", "--status", "open", "--db", db_url)["alerts"]] \
        == [pend.id, cur.id]
    assert [a["id"] for a in as_json("alerts", "ls", "--status", "firing", "--db", db_url)["alerts"]] == [cur.id]
    assert [a["id"] for a in as_json("alerts", "ls", "--rule", "cost-spiral", "--since", "1h",
                                     "--db", db_url)["alerts"]] == [cur.id]
    assert len(as_json("alerts", "ls", "--limit", "1", "--db", db_url)["alerts"]) == 1

    code, out = cli("alerts", "ls", "--db", db_url)
    assert code == 0, out
    lines = out.splitlines()
    row = next(line for line in lines if cur.id[:8] in line)
    for text in ("cost-spiral", "firing", "critical", "session=s-cur", "0.8", "2m ago", "terminate_session"):
        assert text in row, (text, row)
    assert "resolved" in next(line for line in lines if old.id[:8] in line)
    assert [i for i, line in enumerate(lines) if pend.id[:8] in line] < \
        [i for i, line in enumerate(lines) if old.id[:8] in line]  # newest first

    code, out = cli("alerts", "ls", "--status", "resolved", "--rule", "loops", "--db", db_url)
    assert code == 0 and "no resolved alerts of rule loops" in out
    code, out = cli("alerts", "ls", "--status", "burning", "--db", db_url)
    assert code == 1 and "--status takes" in out
    code, out = cli("alerts", "ls", "--since", "last tuesday", "--db", db_url)
    assert code == 1 and "cannot read time" in out


def test_show_prints_evidence_and_events_in_order(db_url: str, engine: Engine) -> None:
    now = time.time_ns()
    tid = secrets.token_hex(16)
    rec = record("cost-spiral", "firing", now - 60 * 10**9, "s-1", trace_id=tid)
    store = AlertStore(engine)
    store.save([rec], [AlertEvent(rec.id, "firing", {"value": 0.8, "silenced_by": None}, now - 60 * 10**9)])
    store.add_events([AlertEvent(rec.id, "notified", {"notifier": "ops", "attempt": 2, "status": "firing"},
                                 now - 59 * 10**9),
                      AlertEvent(rec.id, "action", {"action": "terminate_session", "result": "kill switch on"},
                                 now - 58 * 10**9)])

    code, out = cli("alerts", "show", rec.id[:6], "--db", db_url)
    assert code == 0, out
    assert f"alert {rec.id}" in out and "cost-spiral" in out and "session s-1 spends $0.80/min" in out
    assert f"trace {tid}" in out and f"proctor traces show {tid}" in out
    lines = out.splitlines()
    events = [line.split()[2] for line in lines[lines.index("  events") + 1:]]
    assert events == ["firing", "notified", "action"], out
    assert "notifier=ops" in out and "attempt=2" in out

    doc = as_json("alerts", "show", rec.id, "--db", db_url)
    assert doc["id"] == rec.id and doc["evidence"]["trace_ids"] == [tid]
    assert [e["kind"] for e in doc["events"]] == ["firing", "notified", "action"]

    code, out = cli("alerts", "show", "ffffffff", "--db", db_url)
    assert code == 1 and "no alert 'ffffffff'" in out
    code, out = cli("alerts", "show", "%%%%", "--db", db_url)  # not a LIKE pattern
    assert code == 1 and "not an alert id" in out


# --- silences -----------------------------------------------------------------------------------


def test_silence_list_and_unsilence(db_url: str, engine: Engine) -> None:
    doc = as_json("alerts", "silence", "--rule", "cost-*", "--match", "agent=support", "--for", "2h",
                  "--comment", "known incident", "--by", "alice", "--db", db_url)
    assert doc["matchers"] == {"rule": "cost-*", "agent": "support"} and doc["created_by"] == "alice"
    assert doc["expires_ns"] - doc["created_ns"] == 2 * 3600 * 10**9 and doc["state"] == "active"
    stored = AlertStore(engine).silences(active_at=time.time_ns())
    assert [s.id for s in stored] == [doc["id"]] and stored[0].comment == "known incident"

    code, out = cli("alerts", "silence", "--match", "session=s-7", "--for", "30m", "--comment", "noisy",
                    "--by", "bob", "--db", db_url)
    assert code == 0 and "silenced" in out and "session=s-7" in out and "proctor alerts unsilence" in out
    second = AlertStore(engine).silences()[0]

    listed = as_json("alerts", "silences", "--db", db_url)["silences"]
    assert [s["id"] for s in listed] == [second.id, doc["id"]]
    code, out = cli("alerts", "silences", "--db", db_url)
    assert code == 0 and doc["id"] in out and "rule=cost-* agent=support" in out and "alice" in out

    code, out = cli("alerts", "unsilence", doc["id"][:6], "--db", db_url)  # a unique prefix
    assert code == 0 and f"revoked silence {doc['id']}" in out
    assert [s["id"] for s in as_json("alerts", "silences", "--db", db_url)["silences"]] == [second.id]
    everything = {s["id"]: s for s in as_json("alerts", "silences", "--all", "--db", db_url)["silences"]}
    assert everything[doc["id"]]["state"] == "revoked" and everything[second.id]["state"] == "active"
    code, out = cli("alerts", "silences", "--all", "--db", db_url)
    assert code == 0 and "revoked" in out

    code, out = cli("alerts", "unsilence", "0123456789abcdef", "--db", db_url)
    assert code == 1 and "no silence" in out
    code, out = cli("alerts", "silence", "--for", "1h", "--comment", "x", "--by", "a", "--db", db_url)
    assert code == 1 and "say what to silence" in out
    code, out = cli("alerts", "silence", "--rule", "x", "--for", "forever", "--comment", "x", "--db", db_url)
    assert code == 1 and "--for" in out
    code, out = cli("alerts", "silence", "--match", "agent", "--for", "1h", "--comment", "x", "--db", db_url)
    assert code == 1 and "KEY=VALUE" in out
    code, out = cli("alerts", "silence", "--rule", "x", "--for", "1h", "--db", db_url)
    assert code == 2 and "--comment" in out  # required


def test_a_silence_made_with_the_cli_reaches_a_running_server(db_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alert_service, "SILENCE_REFRESH_S", 0.2)
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    app_ = create_app(db_url, alert_rules=[str(rules)])
    with TestClient(app_):
        code, out = cli("alerts", "silence", "--rule", "cost-*", "--for", "1h", "--comment", "x", "--by", "a",
                        "--db", db_url)
        assert code == 0, out
        engine_ = app_.state.proctor.alerts.engine
        assert wait_until(lambda: len(engine_.silences) == 1, timeout=3)


# --- lint ---------------------------------------------------------------------------------------


def test_lint_passes_good_files_and_names_each_problem_by_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "rules" / "fleet.yaml"
    good.parent.mkdir()
    good.write_text(RULES)
    code, out = cli("alerts", "lint", str(good))
    assert code == 0, out
    assert "2 rules OK" in out and "cost-spiral" in out and "denials" in out and f"{good}:" in out
    code, out = cli("alerts", "lint", str(good.parent))  # a directory: its *.yaml
    assert code == 0 and "2 rules OK in 1 file" in out
    doc = as_json("alerts", "lint", str(good))
    assert doc["valid"] is True and [r["id"] for r in doc["rules"]] == ["cost-spiral", "denials"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    code, out = cli("alerts", "lint", str(good), str(bad))
    assert code == 1
    assert f"{bad}:13: spec.rules[1].when: invalid condition 'value >>> 1'" in out
    assert "alert rules refused: 1 problem in 1 file" in out
    code, out = cli("alerts", "lint", str(bad), "--json")
    assert code == 1 and json.loads(out)["problems"][0]["line"] == 13

    dup = tmp_path / "dup.yaml"
    dup.write_text(RULES.replace("name: test", "name: again"))
    code, out = cli("alerts", "lint", str(good), str(dup))
    assert code == 1 and f"{dup}:8: rules: duplicate rule id 'cost-spiral'" in out

    code, out = cli("alerts", "lint", str(tmp_path / "missing.yaml"))
    assert code == 1 and "missing.yaml:1" in out and "cannot read" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = cli("alerts", "lint", str(empty))
    assert code == 1 and "no rule files" in out


# --- test: replay -------------------------------------------------------------------------------


def test_test_replays_stored_spans_and_decisions(db_url: str, engine: Engine, tmp_path: Path) -> None:
    rules = tmp_path / "fleet.yaml"
    rules.write_text(RULES)
    now = time.time_ns()
    t0 = now - 30 * 60 * 10**9  # half an hour ago
    burn = [costly("s-burn", 0.4, t0 + i * 10**9) for i in range(3)]  # $1.20 within a minute
    calm = [costly("s-calm", 0.1, t0 + i * 10**9) for i in range(3)]
    SpanStore(engine).write(burn + calm)
    deny(engine, 3, t0 + 5 * 10**9, agent="support")
    deny(engine, 1, t0 + 5 * 10**9, agent="triage")

    doc = as_json("alerts", "test", str(rules), "--since", "1h", "--db", db_url)
    assert doc["spans"] == 6 and doc["decisions"] == 4 and doc["rules"] == 2
    fired = {(a["rule_id"], tuple(sorted(a["group"].items()))): a for a in doc["fired"]}
    assert set(fired) == {("cost-spiral", (("session", "s-burn"),)), ("denials", (("agent", "support"),))}
    cost = fired[("cost-spiral", (("session", "s-burn"),))]
    # the second span pushed it over 0.5/min: it fired in that span's second (event time, not now)
    assert t0 + 10**9 <= cost["fired_ns"] < t0 + 3 * 10**9
    assert cost["value"] == pytest.approx(0.8)  # the value when it fired (the report copies the alert then)
    assert cost["evidence"]["trace_ids"][:2] == [s.trace_id for s in burn[:2]]
    denials = fired[("denials", (("agent", "support"),))]
    assert denials["summary"] == "support: 3 calls denied in 5m" and denials["evidence"]["decision_ids"]

    code, out = cli("alerts", "test", str(rules), "--since", "1h", "--db", db_url)
    assert code == 0, out
    row = next(line for line in out.splitlines() if "cost-spiral" in line)
    assert "session=s-burn" in row and "0.8" in row and "session s-burn spends $0.80/min" in row
    assert any(s.trace_id in row for s in burn)
    assert "agent=support" in next(line for line in out.splitlines() if "denials" in line)
    assert "replayed 6 spans and 4 decisions" in out and "2 alerts would have fired" in out
    assert "proctor traces show" in out

    # a window before any of it: nothing to replay
    code, out = cli("alerts", "test", str(rules), "--since", "3h", "--until", "2h", "--db", db_url)
    assert code == 0 and "replayed 0 spans and 0 decisions" in out and "0 alerts would have fired" in out
    # a window that holds only the calm session's first span and nothing else
    only = as_json("alerts", "test", str(rules), "--since", str((t0 - 10**9) / 1e9),
                   "--until", str((t0 + 5 * 10**8) / 1e9), "--db", db_url)
    assert only["spans"] == 2 and only["fired"] == []


def test_test_refuses_broken_rules_and_bad_times(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    code, out = cli("alerts", "test", str(bad), "--db", db_url)
    assert code == 1 and f"{bad}:13: spec.rules[1].when" in out
    good = tmp_path / "good.yaml"
    good.write_text(RULES)
    code, out = cli("alerts", "test", str(good), "--since", "whenever", "--db", db_url)
    assert code == 1 and "cannot read time" in out
    code, out = cli("alerts", "test", str(good), "--since", "1h", "--until", "2h", "--db", db_url)
    assert code == 1 and "--until must be after --since" in out


def test_help_teaches_with_examples() -> None:
    code, out = cli("alerts", "--help")
    assert code == 0
    for cmd in ("ls", "show", "silence", "silences", "unsilence", "lint", "test"):
        assert cmd in out
    assert "proctor alerts silence --rule" in out and "proctor alerts test" in out
