"""Server auth: API keys (only their hashes stored) and roles, on SQLite and PostgreSQL.

Auth is off until a key exists; then every request but /healthz, /login, /logout and /static
needs a key, by header or by the console's cookie, and each role may do exactly what the table
in proctor.server.auth says. Keys made or revoked by the CLI in another process reach a running
server within about a second.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy import text as sa_text
from typer.testing import CliRunner

from proctor.cli import keys as cli_keys
from proctor.cli.main import app as cli
from proctor.sdk.export import ProctorHTTPExporter
from proctor.server.app import create_app
from proctor.server.auth import PERMISSIONS, ROLES, required_permission, safe_next
from proctor.server.run import start_in_thread
from proctor.store import ApiKeyError, ApiKeyNotFound, ApiKeys, apikeys, open_engine
from proctor.store.approvals import ApprovalStore
from proctor.store.schema import api_keys as keys_t

from conftest import free_port, wait_until
from spanfactory import agent_trace, request

PB = {"content-type": "application/x-protobuf"}


@dataclass
class Server:
    url: str
    db: str
    engine: Any  # the test's own engine on the same database: a second process, as the CLI would be

    def get(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.call("GET", path, key, **kw)

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **({"authorization": f"Bearer {key}"} if key else {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, follow_redirects=False, **kw)


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    port = free_port()
    srv, thread = start_in_thread(port=port, database_url=db_url)
    engine = open_engine(db_url)
    try:
        yield Server(f"http://127.0.0.1:{port}", db_url, engine)
    finally:
        srv.should_exit = True
        thread.join(10)
        engine.dispose()


def keys_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    r = CliRunner().invoke(cli, ["keys", *args], env=env)
    assert r.exit_code == 0, r.output
    return r


def create(server: Server, name: str, role: str) -> str:
    """A key made by `proctor keys create` against the database (another process, for the server)."""
    doc = json.loads(keys_cli("create", name, "--role", role, "--db", server.db, "--json").stdout)
    return str(doc["secret"])


def until(predicate, timeout: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held (fails the test after ``timeout``)."""
    t0 = time.monotonic()
    assert wait_until(predicate, timeout=timeout, interval=0.02), "not within the time allowed"
    return time.monotonic() - t0


# -- the store ------------------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_only_its_hash_is_stored(db_url: str) -> None:
    engine = open_engine(db_url)
    try:
        store = ApiKeys(engine)
        key, secret = store.create("alice", "approver", by="ops")
        assert secret.startswith(f"pk_{key.id}_") and len(secret) > 50
        with engine.connect() as conn:
            row = conn.execute(select(keys_t).where(keys_t.c.id == key.id)).one()._asdict()
        assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
        assert not any(secret in str(v) for v in row.values())  # nowhere in the row, whole
        assert secret.startswith(row["prefix"]) and len(row["prefix"]) <= 20
        assert (row["name"], row["role"], row["created_by"], row["revoked_ns"]) == ("alice", "approver", "ops", None)
        assert "key_hash" not in key.to_dict() and secret not in json.dumps(key.to_dict())
        assert store.verify(secret) == store.get(key.id)
        assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None  # same id, wrong secret
        assert store.verify("pk_nothex_" + secret[16:]) is None and store.verify("") is None
    finally:
        engine.dispose()


def test_a_name_belongs_to_one_active_key_and_is_free_again_once_revoked(db_url: str) -> None:
    engine = open_engine(db_url)
    try:
        store = ApiKeys(engine)
        first, _ = store.create("ci", "operator")
        with pytest.raises(ApiKeyError, match="already named 'ci'"):
            store.create("ci", "viewer")
        assert store.revoke("ci").revoked_ns  # by name
        second, secret = store.create("ci", "viewer")
        assert store.get("ci").id == second.id and store.get(first.id).active is False  # by id: the revoked one
        assert store.revoke(first.id).revoked_ns == store.get(first.id).revoked_ns  # revoking twice changes nothing
        assert [k.id for k in store.list()] == [second.id]
        assert [k.id for k in store.list(include_revoked=True)] == [first.id, second.id]
        store.revoke(second.id)
        assert store.verify(secret) is None and not store.any_active()
        with pytest.raises(ApiKeyNotFound):
            store.revoke("nobody")
        for bad in ("", "two words", "-x", "a" * 65):
            with pytest.raises(ApiKeyError, match="invalid key name"):
                store.create(bad, "viewer")
        with pytest.raises(ApiKeyError, match="unknown role 'root'"):
            store.create("x", "root")
    finally:
        engine.dispose()


# -- auth on and off ------------------------------------------------------------------------------


def test_auth_is_off_until_a_key_exists_then_every_request_needs_one(server: Server) -> None:
    assert server.get("/api/traces").status_code == 200
    assert server.get("/login.json").json()["auth"] == "off"
    assert server.call("POST", "/api/kill-switches", json={"scope": "agent:a", "active": False, "by": "me"}
                       ).status_code == 200  # anyone is the local admin
    key = create(server, "root", "admin")
    took = until(lambda: server.get("/api/traces").status_code == 401)
    assert took <= 1.5, f"a key made by the CLI took {took:.2f} s to turn auth on"
    assert server.get("/api/traces", key).status_code == 200
    assert server.get("/login.json").json()["auth"] == "on"
    # the last key revoked: auth is off again
    keys_cli("revoke", "root", "--db", server.db)
    until(lambda: server.get("/api/traces").status_code == 200)


def test_without_a_valid_key_the_api_otlp_and_metrics_answer_401(server: Server) -> None:
    good = create(server, "root", "admin")
    until(lambda: server.get("/api/traces").status_code == 401)
    other = ApiKeys(server.engine)
    _, revoked = other.create("gone", "admin")
    other.revoke("gone")
    for path in ("/api/traces", "/metrics", "/api/approvals", "/openapi.json"):
        r = server.get(path)
        assert r.status_code == 401 and "API key is required" in r.json()["detail"], path
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = server.call("POST", "/v1/traces", content=request(agent_trace()[1]), headers=PB)
    assert r.status_code == 401
    for bad in ("pk_000000000000_" + "x" * 43, good[:-4] + "abcd", revoked, "not-a-key"):
        r = server.get("/api/traces", bad)
        assert r.status_code == 401 and "invalid API key" in r.json()["detail"], bad
    assert server.get("/api/traces", headers={"authorization": f"Basic {good}"}).status_code == 401
    # open without a key: liveness, the login page, the console's assets
    assert server.get("/healthz").status_code == 200
    assert server.get("/login").status_code == 200
    assert server.get("/static/css/console.css").status_code == 200
    assert server.get("/logout").status_code == 303


def test_a_console_page_without_a_login_redirects_to_the_login_page_and_its_json_twin_is_401(server: Server) -> None:
    create(server, "root", "admin")
    until(lambda: server.get("/api/traces").status_code == 401)
    page = server.get("/traces?agent=support&status=error", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Ftraces%3Fagent%3Dsupport%26status%3Derror"
    assert server.get("/traces.json", headers={"accept": "text/html"}).status_code == 401
    assert server.get("/traces", headers={"accept": "application/json"}).status_code == 401


# -- roles -----------------------------------------------------------------------------------------

# (method, path, body, the permission it needs): one or more per rule in the table
ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/api/traces", None, "read"),
    ("GET", "/api/approvals", None, "read"),
    ("GET", "/metrics", None, "read"),
    ("GET", "/traces.json", None, "read"),
    ("POST", "/v1/traces", None, "ingest"),
    ("POST", "/api/guard/tool", {"session_id": "s", "agent": "a", "tool": "t"}, "operate"),
    ("POST", "/api/kill-switches", {"scope": "agent:nobody", "active": False, "by": "t"}, "operate"),
    ("POST", "/api/silences", {"matchers": {"rule": "x-*"}, "duration": "1m", "comment": "t", "by": "t"}, "operate"),
    ("DELETE", "/api/silences/nope", None, "operate"),
    ("POST", "/api/agents/nobody/deploy", {"ref": "nope", "env": "prod", "by": "t"}, "operate"),
    ("POST", "/api/agents/nobody/rollback", {"env": "prod", "by": "t"}, "operate"),
    ("POST", "/api/environments", {"name": "qa"}, "operate"),
    ("POST", "/api/approvals/nope/approve", {"reason": "ok"}, "approve"),
    ("POST", "/api/approvals/nope/deny", {"reason": "no"}, "approve"),
    ("POST", "/api/policy/reload", None, "admin"),
    ("POST", "/api/alert-rules/reload", None, "admin"),
    ("POST", "/api/alert-rules/validate", {"rules": "kind: AlertRules\nrules: []\n"}, "admin"),
    ("GET", "/api/keys", None, "admin"),
    ("POST", "/api/keys", {"name": "made-by-api", "role": "viewer"}, "admin"),
    ("DELETE", "/api/keys/nope", None, "admin"),
]


def test_the_roles_are_the_same_everywhere_they_are_spelt_out() -> None:
    assert ROLES == apikeys.ROLES == cli_keys.ROLES == ("viewer", "operator", "approver", "admin")
    assert set(PERMISSIONS["read"]) == set(ROLES)


def test_the_rule_table_names_the_permission_of_every_route_tested() -> None:
    for method, path, _, permission in ROUTES:
        assert required_permission(method, path) == permission, (method, path)
    # what the console's own forms post is only authenticated here; their handlers require() the rest
    assert required_permission("POST", "/approvals/abc/approve") == "read"


def test_each_role_may_do_exactly_what_its_permissions_allow(server: Server) -> None:
    keys = {role: create(server, f"{role}-key", role) for role in ROLES}
    until(lambda: server.get("/api/traces").status_code == 401 and server.get("/api/traces", keys["viewer"]).is_success)
    seen: dict[tuple[str, str], int] = {}
    for role, key in keys.items():
        for method, path, body, permission in ROUTES:
            kw: dict[str, Any] = {"content": request(agent_trace()[1]), "headers": PB} if path == "/v1/traces" \
                else {"json": body} if body is not None else {}
            r = server.call(method, path, key, **kw)
            seen[(role, f"{method} {path}")] = r.status_code
            allowed = role in PERMISSIONS[permission]
            if allowed:
                assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
            else:
                assert r.status_code == 403, (role, method, path, r.status_code, r.text)
                assert r.json()["detail"].startswith(f"{permission!r} needs the role"), r.text
                assert f"{role}-key is {role}" in r.json()["detail"]
    # the allowed calls did what they say (not merely "not refused")
    assert seen[("operator", "POST /v1/traces")] == 200
    assert seen[("operator", "POST /api/kill-switches")] == 200
    assert seen[("admin", "POST /api/keys")] == 201
    assert seen[("approver", "POST /api/approvals/nope/approve")] == 404


def test_a_revoked_key_is_refused_within_a_second(server: Server) -> None:
    key = create(server, "temp", "viewer")
    create(server, "root", "admin")  # auth stays on once temp is gone
    until(lambda: server.get("/api/traces", key).status_code == 200)
    keys_cli("revoke", "temp", "--db", server.db)
    took = until(lambda: server.get("/api/traces", key).status_code == 401)
    assert took <= 1.5, f"a revoked key was still taken {took:.2f} s later"


def test_keys_made_and_revoked_over_the_api_apply_at_once(server: Server) -> None:
    root = create(server, "root", "admin")
    until(lambda: server.get("/api/keys", root).status_code == 200)
    made = server.call("POST", "/api/keys", root, json={"name": "bot", "role": "operator"})
    assert made.status_code == 201
    doc = made.json()
    assert doc["key"]["created_by"] == "root" and doc["login_path"] == f"/login#key={doc['secret']}"
    assert server.get("/api/traces", doc["secret"]).status_code == 200  # no second to wait: same server
    assert server.call("POST", "/api/keys", root, json={"name": "bot", "role": "viewer"}).status_code == 409
    listed = server.get("/api/keys", root).json()
    assert listed["auth"] == "on" and {k["name"] for k in listed["keys"]} == {"root", "bot"}
    assert doc["secret"] not in json.dumps(listed)
    assert server.call("DELETE", f"/api/keys/{doc['key']['id']}", root).json()["key"]["active"] is False
    assert server.get("/api/traces", doc["secret"]).status_code == 401


def test_a_key_in_use_has_its_last_use_recorded(server: Server) -> None:
    key = create(server, "reader", "viewer")
    assert ApiKeys(server.engine).get("reader").last_used_ns is None
    until(lambda: server.get("/api/traces", key).status_code == 200)
    assert until(lambda: bool(ApiKeys(server.engine).get("reader").last_used_ns)) < 2


# -- what a principal's name is used for ---------------------------------------------------------


def test_ingest_over_otlp_needs_the_ingest_permission(server: Server, tmp_path: Path) -> None:
    viewer, operator = create(server, "dash", "viewer"), create(server, "agent-fleet", "operator")
    until(lambda: server.get("/api/traces", viewer).status_code == 200)
    tid, spans = agent_trace()
    refused = server.call("POST", "/v1/traces", viewer, content=request(spans), headers=PB)
    assert refused.status_code == 403 and "'ingest' needs the role operator, admin" in refused.json()["detail"]
    assert server.get(f"/api/traces/{tid.hex()}", viewer).status_code == 404  # nothing was stored
    # the SDK's exporter sends its key as a bearer token
    exporter = ProctorHTTPExporter(server.url, spool_dir=tmp_path / "spool", api_key=operator)
    try:
        exporter.export_encoded(request(spans))
        assert exporter.sent_batches == 1 and not exporter.spool.files()
    finally:
        exporter.shutdown()
    assert server.get(f"/api/traces/{tid.hex()}", viewer).json()["trace"]["span_count"] == 4


def test_spans_refused_for_the_key_wait_in_the_spool_until_a_good_key_sends_them(server: Server, tmp_path: Path
                                                                                 ) -> None:
    viewer, operator = create(server, "dash", "viewer"), create(server, "agent-fleet", "operator")
    until(lambda: server.get("/api/traces", viewer).status_code == 200)
    tid, spans = agent_trace()
    spool = tmp_path / "spool"
    wrong = ProctorHTTPExporter(server.url, spool_dir=spool, api_key=viewer)  # a key that may not ingest
    try:
        wrong.export_encoded(request(spans))
        assert wrong.sent_batches == 0 and len(wrong.spool.files()) == 1  # kept, not dropped
    finally:
        wrong.shutdown()
    fixed = ProctorHTTPExporter(server.url, spool_dir=spool, api_key=operator)  # the process restarted with a good key
    try:
        assert fixed.flush_spool(timeout_s=10) and fixed.sent_batches == 1
    finally:
        fixed.shutdown()
    assert server.get(f"/api/traces/{tid.hex()}", viewer).json()["trace"]["span_count"] == 4


def _pending(engine: Any, tool: str = "issue_refund") -> str:
    return ApprovalStore(engine).request(digest=hashlib.sha256(tool.encode() + str(time.time_ns()).encode()).hexdigest(),
                                         tool=tool, arguments={"amount_usd": 250}, policy_hash=None,
                                         session_id="s-1", agent="refund-agent", rule_id="refunds", message=None,
                                         ttl_s=600).id


def test_an_approval_records_the_approvers_key_name_not_what_the_body_says(server: Server) -> None:
    approver, operator = create(server, "maria", "approver"), create(server, "bot", "operator")
    until(lambda: server.get("/api/traces", approver).status_code == 200)
    first, second = _pending(server.engine), _pending(server.engine)
    r = server.call("POST", f"/api/approvals/{first}/approve", approver, json={"by": "somebody else", "reason": "ok"})
    assert r.status_code == 200 and r.json()["decided_by"] == "maria" and r.json()["status"] == "approved"
    assert ApprovalStore(server.engine).get(first).decided_by == "maria"
    assert server.call("POST", f"/api/approvals/{second}/deny", operator, json={"reason": "no"}).status_code == 403
    assert server.call("POST", f"/api/approvals/{second}/deny", approver, json={"reason": "no"}).json()["decided_by"] \
        == "maria"  # no "by" needed once auth is on
    # the CLI sends PROCTOR_API_KEY with --url, and shows who the server recorded
    third = _pending(server.engine)
    r2 = CliRunner().invoke(cli, ["approvals", "approve", third, "--by", "ignored", "--url", server.url],
                            env={"PROCTOR_API_KEY": approver})
    assert r2.exit_code == 0, r2.output
    assert "(by maria)" in " ".join(r2.output.split()) and ApprovalStore(server.engine).get(third).decided_by == "maria"


def test_kill_switches_and_silences_record_the_keys_name_not_what_the_body_says(server: Server) -> None:
    operator = create(server, "olga", "operator")
    until(lambda: server.get("/api/traces", operator).status_code == 200)
    r = server.call("POST", "/api/kill-switches", operator,
                    json={"scope": "agent:refund-agent", "active": True, "by": "somebody else", "reason": "drill"})
    assert r.status_code == 200 and r.json()["set_by"] == "olga", r.text
    s = server.call("POST", "/api/silences", operator,
                    json={"matchers": {"rule": "cost-*"}, "duration": "1h", "comment": "drill", "by": "somebody else"})
    assert s.status_code == 201 and s.json()["created_by"] == "olga", s.text


def test_the_cli_sends_PROCTOR_API_KEY_to_a_server(server: Server) -> None:
    key = create(server, "reader", "viewer")
    until(lambda: server.get("/api/traces").status_code == 401)
    ok = CliRunner().invoke(cli, ["traces", "ls", "--url", server.url, "--json"], env={"PROCTOR_API_KEY": key})
    assert ok.exit_code == 0 and json.loads(ok.stdout)["traces"] == []
    refused = CliRunner().invoke(cli, ["traces", "ls", "--url", server.url], env={"PROCTOR_API_KEY": ""})
    assert refused.exit_code == 1 and "401" in refused.output and "API key is required" in refused.output
    kill = CliRunner().invoke(cli, ["kill", "on", "global", "--url", server.url], env={"PROCTOR_API_KEY": key})
    assert kill.exit_code == 1 and "403" in kill.output and "'operate' needs the role operator, admin" in kill.output


def test_proctor_keys_prints_the_secret_once_and_lists_keys_without_it(server: Server) -> None:
    out = keys_cli("create", "alice", "--role", "admin", "--db", server.db, "--server", server.url).stdout
    secret = next(w for w in out.split() if w.startswith("pk_"))
    assert f"{server.url}/login#key={secret}" in out and "shown once" in out and "Auth is now ON" in out
    assert server.get("/api/traces", secret).status_code == 200
    listed = keys_cli("ls", "--db", server.db, "--json").stdout
    assert secret not in listed and json.loads(listed)["keys"][0]["name"] == "alice"
    assert "alice" in keys_cli("ls", "--db", server.db).stdout
    refused = CliRunner().invoke(cli, ["keys", "create", "alice", "--role", "viewer", "--db", server.db])
    assert refused.exit_code == 1 and "already named 'alice'" in refused.output
    assert "auth is OFF" in keys_cli("revoke", "alice", "--db", server.db).stdout


# -- the console's cookie --------------------------------------------------------------------------


def test_a_cookie_login_changes_state_only_from_the_servers_own_pages(server: Server) -> None:
    key = create(server, "ops", "operator")
    until(lambda: server.get("/api/traces").status_code == 401)
    login = server.call("POST", "/login", data={"key": key, "next": "/traces"})
    assert login.status_code == 303 and login.headers["location"] == "/traces"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("proctor_key=ps_") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and key not in cookie  # a login token of its own, never the key
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    jar = {"cookie": f"proctor_key={token}"}
    body = {"scope": "agent:x", "active": True, "by": "ops"}
    assert server.get("/api/traces", headers=jar).status_code == 200  # reading needs no Origin
    for origin in ({"origin": "http://evil.example"}, {"referer": "http://evil.example/page"}, {},
                   {"origin": "null"}):
        r = server.call("POST", "/api/kill-switches", headers={**jar, **origin}, json=body)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], origin
    assert server.call("POST", "/api/kill-switches", headers={**jar, "origin": server.url}, json=body).status_code == 200
    assert server.call("POST", "/api/kill-switches", headers={**jar, "referer": server.url + "/killswitches"},
                       json=body).status_code == 200
    # a bearer key is no ambient credential: no Origin needed
    assert server.call("POST", "/api/kill-switches", key, json=body).status_code == 200
    # a page of another site cannot log this browser in either
    assert server.call("POST", "/login", data={"key": key}, headers={"origin": "http://evil.example"}
                       ).status_code == 403


def test_the_login_page_only_sends_you_on_to_a_path_on_this_server(server: Server) -> None:
    key = create(server, "ops", "viewer")
    until(lambda: server.get("/api/traces").status_code == 401)
    for target, lands in [("/traces?agent=a", "/traces?agent=a"), ("//evil.example/x", "/"),
                          ("https://evil.example/", "/"), ("/\\evil.example", "/"), ("javascript:alert(1)", "/"),
                          ("/login", "/"), ("", "/")]:
        r = server.call("POST", "/login", data={"key": key, "next": target})
        assert r.status_code == 303 and r.headers["location"] == lands, target
        assert safe_next(target) == lands
    wrong = server.call("POST", "/login", data={"key": key + "x", "next": "/traces"})
    assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers
    as_json = server.call("POST", "/login", json={"key": key, "next": "/agents"})
    assert as_json.json() == {"ok": True, "auth": "on", "next": "/agents", "name": "ops", "role": "viewer"}
    login = server.call("POST", "/login", data={"key": key, "next": "/"})
    jar = {"cookie": "proctor_key=" + login.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]}
    assert server.get("/api/traces", headers=jar).status_code == 200
    out = server.get("/logout", headers=jar)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert out.headers["set-cookie"].startswith("proctor_key=;") and "Max-Age=0" in out.headers["set-cookie"]
    assert server.get("/api/traces", headers=jar).status_code == 401  # logged out: the token is dead, not just forgotten


def test_a_console_login_is_a_token_of_its_own_that_dies_with_its_key(server: Server) -> None:
    key = create(server, "ops", "viewer")
    create(server, "root", "admin")  # so that auth stays on when ops is revoked
    until(lambda: server.get("/api/traces").status_code == 401)
    login = server.call("POST", "/login", data={"key": key, "next": "/"})
    token = login.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    jar = {"cookie": f"proctor_key={token}"}
    assert server.get("/api/traces", headers=jar).status_code == 200
    # the key itself in the cookie is not a login (it would reach every port of the host)
    assert server.get("/api/traces", headers={"cookie": f"proctor_key={key}"}).status_code == 401
    # only the token's hash is stored
    with server.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa_text("SELECT token_hash, key_id FROM console_sessions"))]
    assert len(stored) == 1 and token not in stored[0][0] and len(stored[0][0]) == 64
    keys_cli("revoke", "ops", "--db", server.db)
    until(lambda: server.get("/api/traces", headers=jar).status_code == 401)


# -- cost ---------------------------------------------------------------------------------------


def test_the_keys_are_read_about_once_a_second_however_many_requests(db_url: str) -> None:
    app = create_app(db_url)
    engine = app.state.proctor.engine
    _, key = ApiKeys(engine).create("reader", "viewer")
    queries: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if "api_keys" in statement:
            queries.append(statement.split()[0])

    with TestClient(app) as client:
        t0 = time.monotonic()
        statuses = {client.get("/api/stats", headers={"authorization": f"Bearer {key}"}).status_code
                    for _ in range(100)}
        took = time.monotonic() - t0
    assert statuses == {200}
    # one snapshot per 0.8 s at most (the cache's age limit), and one write of the key's last use
    assert queries.count("SELECT") <= took / 0.8 + 1, (queries, took)
    assert queries.count("UPDATE") <= 1


def test_a_revoked_key_loses_its_open_live_stream(server: Server) -> None:
    viewer, operator = create(server, "wall-screen", "viewer"), create(server, "agent-fleet", "operator")
    until(lambda: server.get("/api/traces", viewer).status_code == 200)
    received: list[bytes] = []
    ended = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", server.url + "/live/overview", headers={"authorization": f"Bearer {viewer}"},
                          timeout=httpx.Timeout(5, read=30)) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received.append(chunk)
        ended.set()

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    until(lambda: any(b"data:" in c for c in received), timeout=10)  # the first snapshot
    keys_cli("revoke", "wall-screen", "--db", server.db)
    until(lambda: server.get("/api/traces", viewer).status_code == 401)
    seen = len(received)
    _tid, spans = agent_trace()
    assert server.call("POST", "/v1/traces", operator, content=request(spans), headers=PB).status_code == 200
    assert ended.wait(10), "the stream of a revoked key stayed open"
    assert not any(b"data:" in c for c in received[seen:])  # and nothing after the revocation was sent
    t.join(5)


def test_browsers_must_name_a_trusted_host_so_dns_rebinding_gets_nothing(server: Server) -> None:
    # auth off (no key): a page on attacker.example re-pointed at 127.0.0.1 sends same-origin
    # requests whose Host and Origin agree; the server must still refuse them
    rebound = {"host": "attacker.example:7070", "origin": "http://attacker.example:7070",
               "sec-fetch-site": "same-origin"}
    r = httpx.post(server.url + "/killswitches", headers={**rebound, "content-type": "application/x-www-form-urlencoded"},
                   content="scope=global&on=1&reason=pwned", timeout=10)
    assert r.status_code == 403 and "DNS rebinding" in r.json()["detail"]
    r = httpx.post(server.url + "/api/keys", headers=rebound, json={"name": "attacker", "role": "admin"}, timeout=10)
    assert r.status_code == 403
    assert httpx.get(server.url + "/overview.json", headers=rebound, timeout=10).status_code == 403
    assert not ApiKeys(server.engine).active()  # no key was made
    assert server.get("/api/kill-switches").json()["active"] == []  # and no switch was set
    # the console's own names work; so do clients that are not browsers, whatever their Host
    for host in ("127.0.0.1:7070", "localhost:7070", "[::1]:7070"):
        ok = httpx.get(server.url + "/overview.json", headers={"host": host, "sec-fetch-site": "none"}, timeout=10)
        assert ok.status_code == 200, host
    assert httpx.get(server.url + "/api/traces", headers={"host": "proxy.internal"}, timeout=10).status_code == 200


def test_allowed_hosts_adds_configured_names_and_the_bound_address() -> None:
    from proctor.server.auth import allowed_hosts, host_name

    assert allowed_hosts("proctor.internal, Ops.Example", bound="10.0.0.5") >= {
        "127.0.0.1", "localhost", "[::1]", "proctor.internal", "ops.example", "10.0.0.5"}
    assert "0.0.0.0" not in allowed_hosts("", bound="0.0.0.0")
    assert allowed_hosts("*") == frozenset({"*"})
    assert [host_name(h) for h in ("[::1]:7070", "A.example:80", "localhost", "fe80::1")] == [
        "[::1]", "a.example", "localhost", "fe80::1"]
