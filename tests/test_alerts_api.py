"""The alerts API as a console or a script uses it: alerts raised from spans ingested over OTLP,
their history, the rules behind them, trying rules on stored data, and silences.

Everything is real: the app's lifespan runs the alert engine's thread, the writer and the
decision feed; spans go in through /v1/traces; notifications go to a ``log`` notifier.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from proctor.server import create_app
from proctor.store.alerts import AlertRecord, new_id

from conftest import wait_until
from spanfactory import new_trace_id, request, span

pytestmark = pytest.mark.timeout(60)

PB = {"content-type": "application/x-protobuf"}

RULES = """\
apiVersion: proctor/v1
kind: AlertRules
metadata: {name: test}
spec:
  notifiers:
    - {id: log, type: log}
    - {id: hook, type: webhook, url: "http://127.0.0.1:9/hooks/s3cr3t-token", headers: {Authorization: "Bearer hunter2"}}
  defaults: {notify: [log]}
  rules:
    - {id: cost-spiral, signal: session_cost_rate, window: 1m, when: "value > 0.5", severity: critical, summary: "session {session} spends ${value:.2f}/min"}
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
    - id: bad-signal
      signal: vibes
      when: "value > 1"
    - id: bad-notifier
      signal: spans
      when: "value > 1"
      notify: [pager]
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    p = tmp_path / "alerts.yaml"
    p.write_text(RULES)
    return p


@pytest.fixture
def client(db_url: str, rules_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(db_url, alert_rules=[str(rules_file)])) as c:
        yield c


def costly_span(session: str, cost: float, agent: str = "support") -> tuple[str, Any]:
    """An LLM call that cost ``cost`` USD, ending now, in ``session``."""
    tid = new_trace_id()
    s = span("chat gpt-4o", tid, start_ns=time.time_ns() - 20_000_000, duration_ms=10, attrs={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.conversation.id": session,
        "gen_ai.agent.name": agent, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
        "proctor.cost_usd": cost})
    return tid.hex(), s


def firing(c: TestClient, session: str) -> dict[str, Any] | None:
    alerts = c.get("/api/alerts", params={"status": "firing"}).json()["alerts"]
    return next((a for a in alerts if a["group"].get("session") == session), None)


def event_kinds(c: TestClient, alert_id: str) -> list[str]:
    return [e["kind"] for e in c.get(f"/api/alerts/{alert_id}").json()["events"]]


# --- end to end ---------------------------------------------------------------------------------


def test_spend_over_otlp_fires_notifies_is_silenced_and_replays(client: TestClient) -> None:
    tid, s = costly_span("sess-burn", 0.8)
    assert client.post("/v1/traces", content=request([s]), headers=PB).status_code == 200

    assert wait_until(lambda: firing(client, "sess-burn") is not None, timeout=10), "no alert fired"
    alert = firing(client, "sess-burn")
    assert alert is not None
    assert alert["rule_id"] == "cost-spiral" and alert["severity"] == "critical"
    assert alert["value"] == pytest.approx(0.8)
    assert alert["summary"] == "session sess-burn spends $0.80/min"
    assert alert["evidence"]["trace_ids"] == [tid]
    assert alert["labels"]["agent"] == "support"

    # the notification is sent after the transition is stored: wait for its record
    assert wait_until(lambda: "notified" in event_kinds(client, alert["id"]), timeout=10)
    one = client.get(f"/api/alerts/{alert['id'][:6]}").json()  # a unique prefix will do
    assert one["id"] == alert["id"]
    kinds = [e["kind"] for e in one["events"]]
    assert kinds[:2] == ["firing", "notified"]
    notified = next(e for e in one["events"] if e["kind"] == "notified")
    assert notified["detail"]["notifier"] == "log" and notified["detail"]["status"] == "firing"
    assert one["rule"]["id"] == "cost-spiral" and one["rule"]["when"] == "value > 0.5"
    assert one["rule"]["source"].endswith("alerts.yaml:10")

    # the open alert is listed as open too, and by its rule
    assert [a["id"] for a in client.get("/api/alerts", params={"status": "open"}).json()["alerts"]] == [alert["id"]]
    assert client.get("/api/alerts", params={"rule": "nope"}).json()["alerts"] == []

    # silence the rule for agent support: applies at once
    r = client.post("/api/silences", json={"matchers": {"rule": "cost-*", "agent": "support"}, "duration": "2h",
                                           "comment": "known incident", "by": "alice"})
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["matchers"] == {"rule": "cost-*", "agent": "support"} and silence["created_by"] == "alice"
    assert silence["active"] is True and silence["state"] == "active"
    assert silence["expires_ns"] - silence["created_ns"] == pytest.approx(2 * 3600 * 1e9, rel=1e-6)
    listed = client.get("/api/silences", params={"active": "true"}).json()["silences"]
    assert [x["id"] for x in listed] == [silence["id"]]
    assert client.get("/api/silences", params={"active": "false"}).json()["silences"] == []

    # another session of the same agent overspends: recorded and firing, but muted
    tid2, s2 = costly_span("sess-burn-2", 1.5)
    assert client.post("/v1/traces", content=request([s2]), headers=PB).status_code == 200
    assert wait_until(lambda: firing(client, "sess-burn-2") is not None, timeout=10)
    muted = firing(client, "sess-burn-2")
    assert muted is not None and muted["silenced_by"] == silence["id"]
    assert muted["evidence"]["trace_ids"] == [tid2]
    time.sleep(0.3)  # a notification would have been recorded by now (the first took milliseconds)
    assert event_kinds(client, muted["id"]) == ["firing"]

    # replaying the stored spans through the same rules finds the same alerts
    r = client.post("/api/alert-rules/test", json={"rules": RULES, "since": "10m"})
    assert r.status_code == 200, r.text
    replay = r.json()
    assert replay["spans"] >= 2 and replay["decisions"] == 0
    fired = {a["group"]["session"]: a for a in replay["fired"]}
    assert set(fired) == {"sess-burn", "sess-burn-2"}
    assert fired["sess-burn"]["rule_id"] == "cost-spiral"
    assert fired["sess-burn"]["evidence"]["trace_ids"] == [tid]
    assert fired["sess-burn-2"]["value"] == pytest.approx(1.5)
    # a stricter candidate would not have fired for the first session
    stricter = RULES.replace('"value > 0.5"', '"value > 1.0"')
    replay = client.post("/api/alert-rules/test", json={"rules": stricter, "since": "10m"}).json()
    assert [a["group"]["session"] for a in replay["fired"]] == ["sess-burn-2"]
    # nothing replayed was stored: still two alerts
    assert len(client.get("/api/alerts").json()["alerts"]) == 2

    # lift the silence
    r = client.delete(f"/api/silences/{silence['id']}")
    assert r.status_code == 200 and r.json()["revoked_ns"] is not None and r.json()["state"] == "revoked"
    assert client.get("/api/silences", params={"active": "true"}).json()["silences"] == []
    assert [x["id"] for x in client.get("/api/silences", params={"active": "false"}).json()["silences"]] \
        == [silence["id"]]
    app_state = client.app.state.proctor  # type: ignore[attr-defined]
    assert app_state.alerts.engine.silences == []  # applied at once, not at the next refresh
    assert client.delete(f"/api/silences/{silence['id']}x").status_code == 404


# --- listing ------------------------------------------------------------------------------------


def _record(rule: str, status: str, started_ns: int, session: str) -> AlertRecord:
    return AlertRecord(id=new_id(), rule_id=rule, group_key=f"{rule}-{session}", group={"session": session},
                       status=status, severity="warning", summary=f"{rule} on {session}", value=1.0,
                       labels={"session": session}, evidence={"trace_ids": [], "span_ids": [], "decision_ids": []},
                       started_ns=started_ns, updated_ns=started_ns,
                       fired_ns=started_ns if status != "pending" else None,
                       resolved_ns=started_ns + 1 if status == "resolved" else None)


def test_list_filters_by_status_rule_and_since_newest_first(client: TestClient) -> None:
    store = client.app.state.proctor.alerts.store  # type: ignore[attr-defined]
    now = time.time_ns()
    old = _record("a-rule", "resolved", now - 3 * 3600 * 10**9, "s1")
    mid = _record("b-rule", "firing", now - 600 * 10**9, "s2")
    new = _record("a-rule", "pending", now - 60 * 10**9, "s3")
    store.save([old, mid, new])

    def ids(**params: Any) -> list[str]:
        r = client.get("/api/alerts", params=params)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["alerts"]]

    assert ids() == [new.id, mid.id, old.id]
    assert ids(status="open") == [new.id, mid.id]
    assert ids(status="resolved") == [old.id]
    assert ids(status="pending") == [new.id]
    assert ids(rule="a-rule") == [new.id, old.id]
    assert ids(since="1h") == [new.id, mid.id]
    assert ids(since=str((now - 300 * 10**9) // 10**9)) == [new.id]  # epoch seconds
    assert ids(limit=1) == [new.id]

    one = client.get(f"/api/alerts/{mid.id}").json()
    assert one["rule"] is None  # b-rule is not loaded
    assert one["events"] == [] and one["url"] is None

    assert client.get("/api/alerts", params={"status": "burning"}).status_code == 422
    r = client.get("/api/alerts", params={"since": "last tuesday"})
    assert r.status_code == 400 and "cannot read time" in r.json()["detail"]
    assert client.get("/api/alerts/ffffffffffff").status_code == 404
    assert client.get("/api/alerts/abc").status_code == 422  # a prefix needs 4 characters
    assert client.get("/api/alerts/____").status_code == 422  # not a LIKE pattern


# --- rules --------------------------------------------------------------------------------------


def test_rules_show_notifiers_without_urls_or_credentials(client: TestClient, rules_file: Path) -> None:
    r = client.get("/api/alert-rules")
    assert r.status_code == 200
    doc = r.json()
    assert [x["id"] for x in doc["rules"]] == ["cost-spiral"]
    assert doc["rules"][0]["window_s"] == 60.0 and doc["rules"][0]["notify"] == ["log"]
    assert doc["notifiers"] == [{"id": "log", "type": "log"}, {"id": "hook", "type": "webhook"}]
    assert doc["sources"] == [str(rules_file)] and len(doc["hash"]) == 64
    assert "s3cr3t" not in r.text and "hunter2" not in r.text and "127.0.0.1:9" not in r.text
    # validate never echoes them either
    r = client.post("/api/alert-rules/validate", json={"rules": RULES})
    assert r.status_code == 200 and "s3cr3t" not in r.text and "hunter2" not in r.text


def test_reload_applies_a_good_file_and_keeps_the_rules_on_a_broken_one(client: TestClient,
                                                                        rules_file: Path) -> None:
    before = client.get("/api/alert-rules").json()
    rules_file.write_text(RULES + '    - {id: tool-errors, signal: tool_failure_rate, when: "value > 0.2"}\n')
    r = client.post("/api/alert-rules/reload")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["changed"] is True and doc["previous_hash"] == before["hash"]
    assert [x["id"] for x in doc["rules"]] == ["cost-spiral", "tool-errors"]
    good = doc["hash"]

    rules_file.write_text(BROKEN)
    r = client.post("/api/alert-rules/reload")
    assert r.status_code == 400
    doc = r.json()
    assert "unchanged" in doc["detail"] and doc["hash"] == good
    by_line = {p["line"]: p for p in doc["problems"]}
    assert 15 in by_line and "vibes" in by_line[15]["message"], doc["problems"]  # the unknown signal
    assert all(p["source"] == str(rules_file) for p in doc["problems"])
    now = client.get("/api/alert-rules").json()
    assert now["hash"] == good and [x["id"] for x in now["rules"]] == ["cost-spiral", "tool-errors"]
    assert client.app.state.proctor.alerts.engine.rules.hash == good  # type: ignore[attr-defined]


def test_validate_answers_every_problem_with_its_line(client: TestClient) -> None:
    r = client.post("/api/alert-rules/validate", json={"rules": RULES})
    assert r.status_code == 200
    doc = r.json()
    assert doc["valid"] is True and [x["id"] for x in doc["rules"]] == ["cost-spiral"]
    assert doc["rules"][0]["source"] == "<request>:10"

    # every problem, each at its line: a condition that does not compile, an unknown signal,
    # a notifier nobody defined
    r = client.post("/api/alert-rules/validate", json={"rules": BROKEN})
    assert r.status_code == 400
    doc = r.json()
    assert doc["valid"] is False and doc["detail"].startswith("alert rules refused")
    assert all(p["source"] == "<request>" for p in doc["problems"])
    lines = {p["line"]: p for p in doc["problems"]}
    assert set(lines) == {13, 15, 20}, doc["problems"]
    assert lines[13]["where"] == "spec.rules[1].when" and "value >>> 1" in lines[13]["message"]
    assert lines[15]["where"] == "spec.rules[2].signal" and "vibes" in lines[15]["message"]
    assert lines[20]["where"] == "spec.rules[3].notify" and "pager" in lines[20]["message"]

    r = client.post("/api/alert-rules/validate", json={"rules": "kind: [unclosed"})
    assert r.status_code == 400 and r.json()["problems"][0]["message"].startswith("invalid YAML")
    assert client.post("/api/alert-rules/validate", json={"rules": RULES, "extra": 1}).status_code == 422
    assert client.post("/api/alert-rules/validate", json={"rules": ""}).status_code == 422


def test_test_endpoint_refuses_bad_rules_and_bad_times(client: TestClient) -> None:
    r = client.post("/api/alert-rules/test", json={"rules": BROKEN})
    assert r.status_code == 400 and {p["line"] for p in r.json()["problems"]} == {13, 15, 20}
    r = client.post("/api/alert-rules/test", json={"rules": RULES, "since": "yesterday-ish"})
    assert r.status_code == 400 and r.json()["detail"].startswith("since:")
    r = client.post("/api/alert-rules/test", json={"rules": RULES, "since": "1h", "until": "2h"})
    assert r.status_code == 400 and "after" in r.json()["detail"]
    r = client.post("/api/alert-rules/test", json={"rules": RULES, "since": "1h", "until": None})
    assert r.status_code == 200
    assert r.json()["fired"] == [] and r.json()["spans"] == 0


def test_silence_requests_are_checked(client: TestClient) -> None:
    body = {"matchers": {"rule": "cost-*"}, "duration": "1h", "comment": "", "by": "bob"}
    r = client.post("/api/silences", json={**body, "matchers": {}})
    assert r.status_code == 400 and "at least one matcher" in r.json()["detail"]
    r = client.post("/api/silences", json={**body, "duration": "forever"})
    assert r.status_code == 400 and "duration" in r.json()["detail"]
    r = client.post("/api/silences", json={**body, "duration": 0})
    assert r.status_code == 400 and "longer than 0" in r.json()["detail"]
    assert client.post("/api/silences", json={**body, "duraton": "1h"}).status_code == 422
    assert client.post("/api/silences", json={k: v for k, v in body.items() if k != "by"}).status_code == 422
    r = client.post("/api/silences", json={**body, "duration": 90})  # seconds
    assert r.status_code == 201
    s = r.json()
    assert s["expires_ns"] - s["created_ns"] == 90 * 10**9
    assert [x.id for x in client.app.state.proctor.alerts.engine.silences] == [s["id"]]  # type: ignore[attr-defined]
    assert client.delete("/api/silences/0123456789abcdef").status_code == 404


def test_reloading_unchanged_rules_keeps_open_alerts_open(client: TestClient) -> None:
    _, s = costly_span("sess-keep", 0.9)
    assert client.post("/v1/traces", content=request([s]), headers=PB).status_code == 200
    assert wait_until(lambda: firing(client, "sess-keep") is not None, timeout=10)
    alert = firing(client, "sess-keep")
    assert alert is not None
    r = client.post("/api/alert-rules/reload")
    assert r.status_code == 200 and r.json()["changed"] is False
    time.sleep(1.5)  # a tick or two
    assert client.get(f"/api/alerts/{alert['id']}").json()["status"] == "firing"
