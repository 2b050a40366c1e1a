"""Governance over HTTP, as a client in any language sees it.

The decision API answers every well-formed question with a decision: permitted or not, and
why. Approvals, kill switches and the decision log are shared with every other guard through
the database, so a human's decision or an operator's switch reaches this server's guard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from proctor.policy import PolicyError
from proctor.server import create_app
from proctor.server.governance import NO_POLICY, PermitTable

from conftest import free_port, wait_until

POLICY = """\
apiVersion: proctor/v1
kind: PolicyBundle
metadata:
  name: support
  version: "3"
spec:
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools:
    - {name: "crm.*", side_effect: read}
    - {name: issue_refund, side_effect: irreversible}
    - {name: send_email, side_effect: external}
  capabilities:
    - {agents: "intern-*", tier: draft_only}
  rules:
    - id: refunds-small
      tools: issue_refund
      when: args.amount_usd <= 50
      effect: allow
    - id: refunds-large
      tools: issue_refund
      when: args.amount_usd > 50
      effect: require_approval
      message: Refunds above $50 need a human
    - id: short-completions
      kind: llm
      models: "gpt-*"
      when: llm.max_tokens > 4000
      effect: deny
      message: keep completions short
    - id: no-secrets
      kind: scanner
      scanner: secrets
      stages: [tool_result, input, llm_output]
      effect: redact
    - id: never-drop
      tools: crm.drop_all
      effect: terminate_session
      message: dropping the CRM ends the session
"""
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
S = {"session_id": "sess-1", "agent": "support-bot", "environment": "prod"}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "support.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def client(db_url: str, policy_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(db_url, policy=str(policy_file))) as c:
        yield c


def tool(c: TestClient, name: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    r = c.post("/api/guard/tool", json={**S, "tool": name, "args": args or {}, **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# --- the decision API ---------------------------------------------------------------------


def test_an_allowed_tool_call_gets_a_permit_and_its_result_comes_back_scanned(client: TestClient) -> None:
    doc = tool(client, "issue_refund", {"amount_usd": 20})
    assert doc["permitted"] is True and doc["draft"] is False
    assert doc["decision"]["effect"] == "allow" and doc["decision"]["rule_id"] == "refunds-small"
    assert doc["args"] == {"amount_usd": 20} and len(doc["permit_id"]) == 32

    r = client.post("/api/guard/tool/result", json={"permit_id": doc["permit_id"], "result": f"key {AWS_KEY}"})
    assert r.status_code == 200
    assert r.json() == {"result": "key <AWS_ACCESS_KEY>", "withheld": False, "redacted": True,
                        "terminated": False, "decision": None}


def test_a_permit_is_single_use_and_an_unknown_one_is_404(client: TestClient) -> None:
    permit_id = tool(client, "crm.lookup", {"customer": "c-1"})["permit_id"]
    first = client.post("/api/guard/tool/result", json={"permit_id": permit_id, "result": {"name": "Ada"}})
    assert first.json()["result"] == {"name": "Ada"} and first.json()["redacted"] is False
    again = client.post("/api/guard/tool/result", json={"permit_id": permit_id, "result": "x"})
    assert again.status_code == 404 and "unknown or expired permit" in again.json()["detail"]
    assert client.post("/api/guard/llm/result", json={"permit_id": "f" * 32}).status_code == 404


def test_a_refusal_is_a_decision_not_an_error(client: TestClient) -> None:
    doc = tool(client, "send_email", {"to": "a@example.com"})
    assert doc["permitted"] is False and doc["terminated"] is False and doc["approval_id"] is None
    assert doc["decision"]["effect"] == "deny"
    assert doc["decision"]["message"] == "default effect for external tools"
    assert "permit_id" not in doc


def test_a_draft_only_agent_gets_a_draft_and_no_permit(client: TestClient) -> None:
    doc = client.post("/api/guard/tool", json={**S, "agent": "intern-3", "session_id": "s-intern",
                                                "tool": "issue_refund", "args": {"amount_usd": 20}}).json()
    assert (doc["permitted"], doc["draft"], doc["permit_id"]) == (False, True, None)
    assert doc["args"] == {"amount_usd": 20} and doc["decision"]["draft"] is True


def test_a_terminate_session_rule_ends_the_session_for_every_later_call(client: TestClient) -> None:
    doc = tool(client, "crm.drop_all")
    assert (doc["permitted"], doc["terminated"], doc["decision"]["rule_id"]) == (False, True, "never-drop")
    later = tool(client, "crm.lookup")
    assert later["terminated"] is True and "terminated by never-drop" in later["decision"]["message"]
    other_session = client.post("/api/guard/tool", json={**S, "session_id": "sess-2", "tool": "crm.lookup"})
    assert other_session.json()["permitted"] is True


def test_a_call_needing_approval_runs_once_after_a_human_approves_it(client: TestClient) -> None:
    held = tool(client, "issue_refund", {"amount_usd": 80})
    assert held["permitted"] is False and held["terminated"] is False
    assert held["decision"]["effect"] == "require_approval"
    approval_id = held["approval_id"]
    assert approval_id and approval_id in held["message"]

    pending = client.get("/api/approvals?status=pending").json()
    assert [a["id"] for a in pending["approvals"]] == [approval_id] and pending["pending"] == 1
    assert pending["approvals"][0]["arguments"] == {"amount_usd": 80}
    r = client.post(f"/api/approvals/{approval_id}/approve", json={"by": "alice", "reason": "known customer"})
    assert r.status_code == 200 and (r.json()["status"], r.json()["decided_by"]) == ("approved", "alice")

    released = tool(client, "issue_refund", {"amount_usd": 80}, approval_id=approval_id)
    assert released["permitted"] is True and released["decision"]["rule_id"] == f"approval:{approval_id}"
    assert client.get(f"/api/approvals/{approval_id}").json()["status"] == "consumed"

    replay = tool(client, "issue_refund", {"amount_usd": 80}, approval_id=approval_id)
    assert replay["permitted"] is False and replay["decision"]["effect"] == "deny"
    assert "already used" in replay["decision"]["message"]


def test_the_llm_and_input_checks_follow_the_same_rules(client: TestClient) -> None:
    big = client.post("/api/guard/llm", json={**S, "model": "gpt-4o", "max_tokens": 8000}).json()
    assert big["permitted"] is False and big["decision"]["rule_id"] == "short-completions"

    ok = client.post("/api/guard/llm", json={**S, "model": "gpt-4o", "max_tokens": 500, "prompt": "hi"}).json()
    assert ok["permitted"] is True and ok["prompt"] == "hi"
    wrong_kind = client.post("/api/guard/tool/result", json={"permit_id": ok["permit_id"], "result": "x"})
    assert wrong_kind.status_code == 409 and "is for a llm_call" in wrong_kind.json()["detail"]
    out = client.post("/api/guard/llm/result", json={
        "permit_id": ok["permit_id"], "output": f"use {AWS_KEY}", "input_tokens": 12, "output_tokens": 5,
        "cost_usd": 0.001}).json()
    assert out["output"] == "use <AWS_ACCESS_KEY>" and out["redacted"] is True

    inp = client.post("/api/guard/input", json={**S, "content": f"my key is {AWS_KEY}", "source": "email"}).json()
    assert inp == {"permitted": True, "content": "my key is <AWS_ACCESS_KEY>", "redacted": True, "terminated": False}
    clean = client.post("/api/guard/input", json={**S, "content": {"text": "hello"}}).json()
    assert clean == {"permitted": True, "content": {"text": "hello"}, "redacted": False, "terminated": False}


def test_malformed_bodies_get_a_clear_422_and_change_nothing(client: TestClient) -> None:
    cases = [
        ("/api/guard/tool", {**S, "args": {}}, "tool"),                               # missing tool
        ("/api/guard/tool", {**S, "tool": "crm.x", "args": [1, 2]}, "valid dictionary"),
        ("/api/guard/tool", {**S, "tool": "crm.x", "aproval_id": "a"}, "aproval_id"),  # misspelt field
        ("/api/guard/tool", {"agent": "a", "tool": "crm.x"}, "session_id"),
        ("/api/guard/llm", {**S, "model": "gpt-4o", "max_tokens": -1}, "max_tokens"),
        ("/api/guard/llm/result", {"permit_id": "p", "input_tokens": "many"}, "input_tokens"),
        ("/api/guard/input", {**S}, "content"),
        ("/api/kill-switches", {"scope": "agent:two words", "active": True, "by": "ops"}, "invalid kill-switch scope"),
        ("/api/approvals/abc/approve", {"reason": "ok"}, "by"),
    ]
    for path, body, words in cases:
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text)
        assert words in r.text, (path, r.text)
    assert client.get("/api/decisions").json()["decisions"] == []


# --- approvals ------------------------------------------------------------------------------


def test_an_approval_is_decided_once_and_unknown_ones_are_404(client: TestClient) -> None:
    approval_id = tool(client, "issue_refund", {"amount_usd": 99})["approval_id"]
    denied = client.post(f"/api/approvals/{approval_id}/deny", json={"by": "bob", "reason": "fraud"})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    second = client.post(f"/api/approvals/{approval_id}/approve", json={"by": "alice"})
    assert second.status_code == 409 and f"approval {approval_id} already denied by bob" in second.json()["detail"]
    assert [a["id"] for a in client.get("/api/approvals?status=denied").json()["approvals"]] == [approval_id]
    assert client.get("/api/approvals?status=pending").json() == {"approvals": [], "pending": 0}

    assert client.get("/api/approvals/nope").status_code == 404
    missing = client.post("/api/approvals/nope/approve", json={"by": "alice"})
    assert missing.status_code == 404 and "no approval 'nope'" in missing.json()["detail"]
    assert client.get("/api/approvals?status=maybe").status_code == 422

    retry = tool(client, "issue_refund", {"amount_usd": 99}, approval_id=approval_id)
    assert retry["permitted"] is False and "denied by bob: fraud" in retry["decision"]["message"]


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).bodies.append(json.loads(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_the_approval_webhook_receives_a_slack_compatible_message(db_url: str, policy_file: Path) -> None:
    handler = type("Hook", (_Receiver,), {"bodies": []})
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/approvals"
    try:
        with TestClient(create_app(db_url, policy=str(policy_file), approval_webhook=hook)) as c:
            approval_id = tool(c, "issue_refund", {"amount_usd": 75})["approval_id"]
            assert wait_until(lambda: len(handler.bodies) == 1, timeout=5)
        body = handler.bodies[0]
        assert "issue_refund" in body["text"] and "support-bot" in body["text"]
        assert isinstance(body["blocks"], list) and body["blocks"]
        assert f"proctor approvals approve {approval_id}" in json.dumps(body["blocks"])
        assert body["proctor"]["id"] == approval_id and body["proctor"]["arguments"] == {"amount_usd": 75}
    finally:
        receiver.shutdown()
        receiver.server_close()


# --- kill switches --------------------------------------------------------------------------


def test_a_kill_switch_set_from_another_process_stops_the_next_call_within_a_second(
    db_url: str, policy_file: Path
) -> None:
    from proctor.server.run import start_in_thread

    port = free_port()
    server, thread = start_in_thread(port=port, database_url=db_url, policy=[str(policy_file)])
    url = f"http://127.0.0.1:{port}"
    try:
        def call() -> dict[str, Any]:
            return httpx.post(f"{url}/api/guard/tool", json={**S, "tool": "crm.lookup"}, timeout=5).json()

        assert call()["permitted"] is True
        subprocess.run(
            [sys.executable, "-m", "proctor.cli.main", "kill", "on", "agent:support-bot", "--db", db_url,
             "--by", "ops", "--reason", "refund loop"],
            check=True, capture_output=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        set_at = time.monotonic()
        assert wait_until(lambda: call()["terminated"], timeout=1.0, interval=0.02)
        assert time.monotonic() - set_at < 1.0
        refused = call()
        assert refused["permitted"] is False and "kill switch agent:support-bot is on" in refused["message"]

        switches = httpx.get(f"{url}/api/kill-switches").json()
        assert switches["active"] == ["agent:support-bot"]
        assert switches["kill_switches"][0]["reason"] == "refund loop"
        r = httpx.post(f"{url}/api/kill-switches", json={"scope": "agent:support-bot", "active": False, "by": "ops"})
        assert r.status_code == 200 and r.json()["active"] is False
        assert httpx.get(f"{url}/api/kill-switches").json()["active"] == []
    finally:
        server.should_exit = True
        thread.join(10)


# --- policy ---------------------------------------------------------------------------------


def test_an_invalid_policy_reload_is_refused_with_file_and_line_and_the_active_one_stays(
    client: TestClient, policy_file: Path
) -> None:
    active = client.get("/api/policy").json()
    assert active["paths"] == [str(policy_file)]
    (bundle,) = active["bundles"]
    assert (bundle["name"], bundle["version"], bundle["source"], bundle["rules"]) == (
        "support", "3", str(policy_file), 5)
    assert active["hash"] == bundle["hash"] and len(active["hash"]) == 64

    broken = POLICY.replace("effect: deny", "effect: nope").replace("effect: terminate_session", "effect: explode")
    policy_file.write_text(broken)
    r = client.post("/api/policy/reload")
    assert r.status_code == 400
    problems = r.json()["problems"]
    expected = [f"{policy_file}:{n}: spec.rules[{i}].effect: '{bad}' is not one of"
                for n, i, bad in ((broken.splitlines().index(f"      effect: {bad}") + 1, i, bad)
                                  for i, bad in ((2, "nope"), (4, "explode")))]
    assert [p[:len(e)] for p, e in zip(problems, expected, strict=True)] == expected
    assert "unchanged" in r.json()["detail"]
    assert client.get("/api/policy").json()["hash"] == active["hash"]
    assert tool(client, "issue_refund", {"amount_usd": 20})["permitted"] is True  # still enforced

    policy_file.write_text(POLICY.replace('version: "3"', 'version: "4"').replace("<= 50", "<= 100")
                                 .replace("> 50", "> 100"))
    reloaded = client.post("/api/policy/reload").json()
    assert reloaded["changed"] is True and reloaded["previous_hash"] == active["hash"]
    assert reloaded["bundles"][0]["version"] == "4"
    assert tool(client, "issue_refund", {"amount_usd": 80})["permitted"] is True


def test_without_a_policy_the_guard_answers_409_and_the_stores_still_work(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROCTOR_POLICY", raising=False)
    with TestClient(create_app(db_url)) as c:
        for path in ("/api/guard/tool", "/api/guard/tool/result", "/api/guard/llm", "/api/guard/llm/result",
                     "/api/guard/input", "/api/policy/reload"):
            r = c.post(path, json={})
            assert r.status_code == 409 and r.json()["detail"] == NO_POLICY, path
        assert c.get("/api/policy").status_code == 409
        assert c.get("/api/approvals").json() == {"approvals": [], "pending": 0}
        assert c.post("/api/kill-switches", json={"scope": "writes_off", "active": True, "by": "ops"}).status_code == 200
        assert c.get("/api/kill-switches").json()["active"] == ["writes_off"]
        assert c.get("/api/audit/verify").json() == {"ok": True, "checked": 0, "problems": [], "first_bad_seq": None}
        paths = set(c.get("/openapi.json").json()["paths"])
        assert {"/api/guard/tool", "/api/guard/tool/result", "/api/guard/llm", "/api/guard/llm/result",
                "/api/guard/input", "/api/policy", "/api/policy/reload", "/api/approvals",
                "/api/approvals/{approval_id}", "/api/approvals/{approval_id}/approve",
                "/api/approvals/{approval_id}/deny", "/api/kill-switches", "/api/decisions",
                "/api/audit/verify"} <= paths


def test_the_policy_comes_from_PROCTOR_POLICY_and_a_bad_one_stops_the_start(
    tmp_path: Path, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(POLICY.replace("name: support", "name: billing"))
    monkeypatch.setenv("PROCTOR_POLICY", os.pathsep.join([str(policy_file), str(other)]))
    with TestClient(create_app(f"sqlite:///{tmp_path / 'env.db'}")) as c:
        assert [b["name"] for b in c.get("/api/policy").json()["bundles"]] == ["support", "billing"]

    other.write_text("apiVersion: proctor/v1\nkind: PolicyBundle\nmetadata: {name: x}\nspec: {mode: loud}\n")
    with pytest.raises(PolicyError) as exc:
        create_app(f"sqlite:///{tmp_path / 'env.db'}")
    assert str(other) + ":4" in str(exc.value)


# --- the decision log -----------------------------------------------------------------------


def test_the_decision_log_lists_what_the_guard_decided_and_verifies(client: TestClient) -> None:
    tool(client, "crm.lookup")
    tool(client, "send_email")
    tool(client, "issue_refund", {"amount_usd": 10})
    client.post("/api/guard/tool", json={**S, "session_id": "other", "tool": "crm.lookup"})

    doc = client.get("/api/decisions", params={"session_id": "sess-1"}).json()
    assert [(d["target"], d["effect"]) for d in doc["decisions"]] == [
        ("issue_refund", "allow"), ("send_email", "deny"), ("crm.lookup", "allow")]
    assert doc["decisions"][0]["agent"] == "support-bot" and doc["next_before_seq"] is None
    denied = client.get("/api/decisions", params={"effect": "deny"}).json()["decisions"]
    assert [d["target"] for d in denied] == ["send_email"]
    page = client.get("/api/decisions", params={"limit": 2}).json()
    rest = client.get("/api/decisions", params={"limit": 2, "before_seq": page["next_before_seq"]}).json()
    assert [d["seq"] for d in page["decisions"] + rest["decisions"]] == [4, 3, 2, 1]
    assert client.get("/api/decisions", params={"effect": "maybe"}).status_code == 422

    assert client.get("/api/audit/verify").json() == {"ok": True, "checked": 4, "problems": [], "first_bad_seq": None}


# --- the permit table -----------------------------------------------------------------------


def test_the_permit_table_forgets_expired_permits_and_the_oldest_beyond_its_size() -> None:
    now = [0.0]

    class FakePermit:
        stage = "tool_call"

    table = PermitTable(ttl_s=10, max_size=3, clock=lambda: now[0])
    ids = [table.add(FakePermit()) for _ in range(4)]  # type: ignore[arg-type]
    assert len(table) == 3
    with pytest.raises(LookupError):
        table.take(ids[0], "tool_call")  # pushed out by the fourth
    with pytest.raises(ValueError, match="is for a tool_call, not a llm_call"):
        table.take(ids[1], "llm_call")
    assert table.take(ids[1], "tool_call") is not None
    now[0] = 10.0
    with pytest.raises(LookupError, match="unknown or expired"):
        table.take(ids[2], "tool_call")
    table.add(FakePermit())  # type: ignore[arg-type]
    assert len(table) == 1  # the expired ones were swept on the way in
