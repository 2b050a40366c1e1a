"""Alert notifiers and the dispatcher, against real receivers on loopback: an HTTP server that
records what it is sent (and answers as scripted), a real SMTP server (aiosmtpd), and ports where
nothing listens or nothing answers."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from jsonschema import Draft202012Validator

from proctor.telemetry.notify import (
    NOTIFIER_SCHEMA,
    DeliveryResult,
    Dispatcher,
    EmailNotifier,
    LogNotifier,
    Notification,
    NotifyError,
    SlackNotifier,
    WebhookNotifier,
    build_notifier,
)

from conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(15)

STARTED_NS = 1_790_000_000_000_000_000  # 2026-09-21T14:13:20Z


def make_notification(status: str = "firing", rule_id: str = "cost-rate", n_alerts: int = 1,
                      action: str | None = None, summary: str = "session s-1 spends $1.20/min") -> Notification:
    alerts = [
        {
            "id": f"a-{i}",
            "rule_id": rule_id,
            "status": status,
            "group": {"session_id": f"s-{i + 1}", "agent": "support"},
            "value": 1.2 + i,
            "summary": summary,
            "started_ns": STARTED_NS,
            "fired_ns": STARTED_NS + 60_000_000_000,
            "resolved_ns": STARTED_NS + 120_000_000_000 if status == "resolved" else None,
            "labels": {"team": "payments"},
            "evidence": {"trace_ids": [f"trace-{i}a", f"trace-{i}b"], "span_ids": ["span-1"], "decision_ids": []},
            "url": f"http://127.0.0.1:7070/alerts/a-{i}",
        }
        for i in range(n_alerts)
    ]
    return Notification(rule_id=rule_id, status=status, severity="critical", summary=summary, alerts=alerts,
                        group_key=f"{rule_id}/session_id=s-1", action=action)


class Results:
    """Collects DeliveryResults as on_result sees them."""

    def __init__(self) -> None:
        self.items: list[DeliveryResult] = []
        self._lock = threading.Lock()

    def __call__(self, r: DeliveryResult) -> None:
        with self._lock:
            self.items.append(r)

    def for_(self, notifier_id: str) -> list[DeliveryResult]:
        with self._lock:
            return [r for r in self.items if r.notifier_id == notifier_id]

    def final(self, notifier_id: str) -> list[DeliveryResult]:
        return [r for r in self.for_(notifier_id) if r.final]


# --------------------------------------------------------------------------- receivers


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """A real HTTP server on 127.0.0.1 recording every POST; answers from ``script`` in order
    (status, headers), then 200."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    holder: dict[str, HttpReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = holder["r"]
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with rec.lock:
                rec.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                             time.monotonic()))
                status, headers = rec.script.pop(0) if rec.script else (200, {})
            payload = b"ok" if status < 300 else b"nope"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = HttpReceiver(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A port that accepts TCP connections (the kernel does) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


class SmtpHandler:
    """aiosmtpd handler keeping every message; ``replies`` scripts the DATA answers."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.replies: list[str] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login.decode(), data.password.decode()))
            if data.password == b"s3cret":
                return AuthResult(success=True)
        # handled=False: aiosmtpd itself answers "535 ... credentials invalid".
        return AuthResult(success=False, handled=False)

    def message(self, i: int = 0) -> EmailMessage:
        msg = email.message_from_bytes(self.envelopes[i].content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpHandler, int]]:
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, auth_require_tls=False,
                            authenticator=handler.authenticator)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def email_spec(port: int, **extra: Any) -> dict[str, Any]:
    return {"id": "mail", "type": "email", "host": "127.0.0.1", "port": port, "from": "proctor@localhost",
            "to": ["oncall@example.com", "sre@example.com"], "timeout_s": 2, **extra}


# --------------------------------------------------------------------------- webhook and slack


def test_webhook_posts_the_whole_payload_as_json_with_the_configured_headers(receiver: HttpReceiver) -> None:
    notifier = build_notifier({"id": "ops", "type": "webhook", "url": receiver.url,
                               "headers": {"X-Token": "abc"}, "timeout_s": 5})
    assert isinstance(notifier, WebhookNotifier) and notifier.kind == "webhook" and notifier.id == "ops"
    results = Results()
    n = make_notification(n_alerts=2, action="terminate_session")
    with Dispatcher({"ops": notifier}, on_result=results) as d:
        d.submit(n, ["ops"])
        assert d.flush(5)
        assert d.stats == {"sent": 1, "failed": 0, "retried": 0, "dropped": 0}

    [req] = receiver.requests
    assert req.path == "/hook"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-token"] == "abc"
    body = req.json()
    assert body == n.to_json()
    assert body["version"] == "1" and body["source"] == "proctor"
    assert {k: body[k] for k in ("rule_id", "status", "severity", "summary", "group_key", "action")} == {
        "rule_id": "cost-rate", "status": "firing", "severity": "critical",
        "summary": "session s-1 spends $1.20/min", "group_key": "cost-rate/session_id=s-1",
        "action": "terminate_session"}
    assert [a["id"] for a in body["alerts"]] == ["a-0", "a-1"]
    assert body["alerts"][0]["evidence"]["trace_ids"] == ["trace-0a", "trace-0b"]
    assert body["alerts"][0]["group"] == {"session_id": "s-1", "agent": "support"}
    [r] = results.items
    assert (r.notifier_id, r.attempt, r.ok, r.error, r.final) == ("ops", 1, True, None, True)
    assert r.notification is n and r.ts_ns > 0


def test_slack_notifier_posts_text_and_mrkdwn_blocks(receiver: HttpReceiver) -> None:
    notifier = build_notifier({"id": "chat", "type": "slack", "url": receiver.url})
    assert isinstance(notifier, SlackNotifier)
    notifier.send(make_notification(n_alerts=2, action="terminate_session"))
    body = receiver.requests[0].json()
    assert body["text"] == "[FIRING] cost-rate (critical): session s-1 spends $1.20/min"
    assert all(b["type"] in ("section", "context") for b in body["blocks"])
    texts = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    assert texts[0] == "*[FIRING] cost-rate (critical): session s-1 spends $1.20/min*"
    lines = texts[1].splitlines()
    assert len(lines) == 2
    assert "session_id=s-1, agent=support" in lines[0] and "value 1.2" in lines[0]
    assert "<http://127.0.0.1:7070/alerts/a-0|open>" in lines[0]
    assert "value 2.2" in lines[1]
    context = body["blocks"][-1]["elements"][0]["text"]
    assert "cost-rate/session_id=s-1" in context and "terminate_session" in context

    notifier.send(make_notification(status="resolved"))
    assert receiver.requests[1].json()["text"].startswith("[RESOLVED] cost-rate (critical): ")


def test_slack_text_escapes_mrkdwn_control_characters(receiver: HttpReceiver) -> None:
    notifier = build_notifier({"id": "chat", "type": "slack", "url": receiver.url})
    notifier.send(make_notification(summary="p95 > 2s & rising <fast>"))
    body = receiver.requests[0].json()
    assert body["text"].endswith("p95 > 2s & rising <fast>")  # the plain fallback is not mrkdwn
    assert "p95 &gt; 2s &amp; rising &lt;fast&gt;" in body["blocks"][0]["text"]["text"]


def test_send_classifies_http_failures(receiver: HttpReceiver) -> None:
    notifier = build_notifier({"id": "ops", "type": "webhook", "url": receiver.url})
    receiver.script[:] = [(400, {}), (503, {"Retry-After": "7"}), (408, {}), (429, {}), (302, {"Location": "/x"})]
    outcomes = []
    for _ in range(5):
        with pytest.raises(NotifyError) as info:
            notifier.send(make_notification())
        outcomes.append((info.value.retryable, info.value.retry_after_s))
        assert "HTTP" in str(info.value)
    assert outcomes == [(False, None), (True, 7.0), (True, None), (True, None), (False, None)]


# --------------------------------------------------------------------------- retries


def test_503_twice_then_200_is_delivered_on_the_third_attempt(receiver: HttpReceiver) -> None:
    receiver.script[:] = [(503, {}), (503, {})]
    results = Results()
    d = Dispatcher({"ops": build_notifier({"id": "ops", "type": "webhook", "url": receiver.url})},
                   base_backoff_s=0.01, on_result=results)
    try:
        d.submit(make_notification(), ["ops"])
        assert d.flush(5)
    finally:
        d.close()
    got = [(r.attempt, r.ok, r.final) for r in results.for_("ops")]
    assert got == [(1, False, False), (2, False, False), (3, True, True)]
    assert "HTTP 503" in (results.items[0].error or "")
    assert len(receiver.requests) == 3
    assert d.stats == {"sent": 1, "failed": 0, "retried": 2, "dropped": 0}


def test_400_is_given_up_after_one_attempt(receiver: HttpReceiver) -> None:
    receiver.script[:] = [(400, {})]
    results = Results()
    with Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, base_backoff_s=0.01, on_result=results) as d:
        d.submit(make_notification(), ["ops"])
        assert d.flush(5)
        assert d.stats["failed"] == 1 and d.stats["retried"] == 0
    [r] = results.for_("ops")
    assert (r.attempt, r.ok, r.final) == (1, False, True)
    assert "HTTP 400" in (r.error or "")
    assert len(receiver.requests) == 1


def test_nothing_listening_is_given_up_after_max_attempts() -> None:
    results = Results()
    url = f"http://127.0.0.1:{free_port()}/hook"
    with Dispatcher({"dead": WebhookNotifier("dead", url)}, max_attempts=4, base_backoff_s=0.01,
                    on_result=results) as d:
        d.submit(make_notification(), ["dead"])
        assert d.flush(5)
        assert d.stats == {"sent": 0, "failed": 1, "retried": 3, "dropped": 0}
    got = [(r.attempt, r.ok, r.final) for r in results.for_("dead")]
    assert got == [(1, False, False), (2, False, False), (3, False, False), (4, False, True)]
    assert all("ConnectError" in (r.error or "") for r in results.items)


def test_429_with_retry_after_zero_is_retried_at_once(receiver: HttpReceiver) -> None:
    # A 5 s backoff would blow the 2 s bound below: Retry-After: 0 must win over it.
    receiver.script[:] = [(429, {"Retry-After": "0"})]
    results = Results()
    with Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, base_backoff_s=5.0, on_result=results) as d:
        t0 = time.monotonic()
        d.submit(make_notification(), ["ops"])
        assert d.flush(2)
        assert time.monotonic() - t0 < 2
    assert [(r.attempt, r.ok) for r in results.for_("ops")] == [(1, False), (2, True)]


def test_retry_after_is_capped_by_max_backoff(receiver: HttpReceiver) -> None:
    receiver.script[:] = [(503, {"Retry-After": "3600"})]
    with Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, max_backoff_s=0.05) as d:
        d.submit(make_notification(), ["ops"])
        assert d.flush(3)
        assert d.stats["sent"] == 1 and d.stats["retried"] == 1


def test_a_dead_receiver_does_not_delay_a_live_one_and_close_is_bounded(
        receiver: HttpReceiver, hanging_url: str) -> None:
    results = Results()
    d = Dispatcher({"hung": WebhookNotifier("hung", hanging_url, timeout_s=3),
                    "refused": WebhookNotifier("refused", f"http://127.0.0.1:{free_port()}/"),
                    "live": WebhookNotifier("live", receiver.url)},
                   base_backoff_s=0.5, on_result=results)
    t0 = time.monotonic()
    for i in range(3):
        d.submit(make_notification(rule_id=f"r{i}"), ["hung", "refused", "live"])
    assert wait_until(lambda: len(results.final("live")) == 3, timeout=2)
    assert time.monotonic() - t0 < 1.0
    assert [r.ok for r in results.final("live")] == [True, True, True]
    # The others are still trying: nothing final for them yet.
    assert results.final("hung") == [] and results.final("refused") == []
    assert not d.flush(0.05)

    t1 = time.monotonic()
    d.close(timeout_s=1.0)
    assert time.monotonic() - t1 < 1.3
    # The refused lane was sleeping between attempts: close abandoned its three, each reported.
    abandoned = results.final("refused")
    assert len(abandoned) == 3 and not any(r.ok for r in abandoned)
    assert all("dispatcher closed" in (r.error or "") for r in abandoned)


def test_order_is_kept_per_notifier(receiver: HttpReceiver) -> None:
    receiver.script[:] = [(503, {})]  # the first one is retried; the rest must wait for it
    with Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, base_backoff_s=0.01) as d:
        for i in range(5):
            d.submit(make_notification(rule_id=f"r{i}"), ["ops"])
        assert d.flush(5)
    delivered = [r.json()["rule_id"] for r in receiver.requests]
    assert delivered == ["r0", "r0", "r1", "r2", "r3", "r4"]


# --------------------------------------------------------------------------- the dispatcher's edges


def test_unknown_notifier_is_reported_and_the_rest_delivered(receiver: HttpReceiver) -> None:
    results = Results()
    with Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, on_result=results) as d:
        d.submit(make_notification(), ["nope", "ops", "ops"])  # named twice: one message
        assert d.flush(5)
        assert d.stats["failed"] == 1 and d.stats["sent"] == 1
    [r] = results.for_("nope")
    assert (r.ok, r.error, r.final, r.attempt) == (False, "unknown notifier", True, 0)
    assert len(receiver.requests) == 1


def test_a_full_queue_drops_without_blocking(hanging_url: str) -> None:
    results = Results()
    d = Dispatcher({"hung": WebhookNotifier("hung", hanging_url, timeout_s=2)}, max_queue=2, on_result=results)
    try:
        t0 = time.monotonic()
        for i in range(50):
            d.submit(make_notification(rule_id=f"r{i}"), ["hung"])
        assert time.monotonic() - t0 < 0.5
        assert d.stats["dropped"] == 48
        dropped = results.final("hung")
        assert len(dropped) == 48 and all("queue full" in (r.error or "") for r in dropped)
    finally:
        t1 = time.monotonic()
        d.close(timeout_s=0.5)
        assert time.monotonic() - t1 < 0.8


def test_on_result_exceptions_are_swallowed(receiver: HttpReceiver, caplog: pytest.LogCaptureFixture) -> None:
    def boom(r: DeliveryResult) -> None:
        raise RuntimeError("callback bug")

    with Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, on_result=boom) as d:
        d.submit(make_notification(), ["ops", "unknown"])  # the unknown one calls back in our thread
        d.submit(make_notification(rule_id="second"), ["ops"])
        assert d.flush(5)
        assert d.stats["sent"] == 2
    assert "on_result raised" in caplog.text


def test_submit_after_close_is_refused_not_raised(receiver: HttpReceiver) -> None:
    results = Results()
    d = Dispatcher({"ops": WebhookNotifier("ops", receiver.url)}, on_result=results)
    d.close()
    d.submit(make_notification(), ["ops"])
    assert d.stats["dropped"] == 1
    assert results.final("ops")[0].error == "dispatcher closed"
    assert receiver.requests == []


def test_a_notifier_that_raises_something_else_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        id = "broken"
        kind = "log"

        def send(self, n: Notification) -> None:
            raise KeyError("bug")

    results = Results()
    with Dispatcher({"broken": Broken()}, base_backoff_s=0.01, on_result=results) as d:
        d.submit(make_notification(), ["broken"])
        assert d.flush(5)
    [r] = results.for_("broken")
    assert (r.attempt, r.ok, r.final) == (1, False, True) and "KeyError" in (r.error or "")


# --------------------------------------------------------------------------- email


def test_email_reaches_a_real_smtp_server(smtp: tuple[SmtpHandler, int]) -> None:
    handler, port = smtp
    notifier = build_notifier(email_spec(port))
    assert isinstance(notifier, EmailNotifier)
    results = Results()
    with Dispatcher({"mail": notifier}, on_result=results) as d:
        d.submit(make_notification(n_alerts=2, action="terminate_session"), ["mail"])
        assert d.flush(5)
    assert [r.ok for r in results.items] == [True]
    [envelope] = handler.envelopes
    assert envelope.mail_from == "proctor@localhost"
    assert envelope.rcpt_tos == ["oncall@example.com", "sre@example.com"]
    msg = handler.message()
    assert msg["Subject"] == "[Proctor FIRING] cost-rate: session s-1 spends $1.20/min"
    assert msg["From"] == "proctor@localhost"
    assert msg["To"] == "oncall@example.com, sre@example.com"
    assert msg["Message-ID"].endswith("@localhost>")
    body = msg.get_content()
    assert "[FIRING] cost-rate (critical): session s-1 spends $1.20/min" in body
    assert "Action taken: terminate_session" in body
    assert "group: session_id=s-1, agent=support" in body
    assert "value: 1.2" in body and "value: 2.2" in body
    assert "started: 2026-09-21T14:13:20.000Z" in body
    assert "traces: trace-0a, trace-0b" in body
    assert "url: http://127.0.0.1:7070/alerts/a-1" in body


def test_resolved_email_subject(smtp: tuple[SmtpHandler, int]) -> None:
    handler, port = smtp
    spec = email_spec(port, to="oncall@example.com, sre@example.com")  # one string, comma-separated
    build_notifier(spec).send(make_notification(status="resolved"))
    assert handler.envelopes[0].rcpt_tos == ["oncall@example.com", "sre@example.com"]
    msg = handler.message()
    assert msg["Subject"] == "[Proctor RESOLVED] cost-rate: session s-1 spends $1.20/min"
    assert "resolved: 2026-09-21T14:15:20.000Z" in msg.get_content()


def test_smtp_4xx_is_retried_and_5xx_is_not(smtp: tuple[SmtpHandler, int]) -> None:
    handler, port = smtp
    handler.replies[:] = ["451 4.3.0 try again later", "550 5.7.1 relaying denied"]
    results = Results()
    with Dispatcher({"mail": build_notifier(email_spec(port))}, base_backoff_s=0.01, on_result=results) as d:
        d.submit(make_notification(rule_id="first"), ["mail"])
        assert d.flush(5)
        # 451 then 550: the first notification is given up on its second attempt.
        d.submit(make_notification(rule_id="second"), ["mail"])
        assert d.flush(5)
    got = [(r.notification.rule_id, r.attempt, r.ok, r.final) for r in results.items]
    assert got == [("first", 1, False, False), ("first", 2, False, True), ("second", 1, True, True)]
    assert "451" in (results.items[0].error or "") and "550" in (results.items[1].error or "")
    assert len(handler.envelopes) == 1


def test_smtp_server_down_is_retried_then_given_up() -> None:
    results = Results()
    spec = email_spec(free_port())
    with Dispatcher({"mail": build_notifier(spec)}, max_attempts=3, base_backoff_s=0.01, on_result=results) as d:
        d.submit(make_notification(), ["mail"])
        assert d.flush(5)
    got = [(r.attempt, r.ok, r.final) for r in results.items]
    assert got == [(1, False, False), (2, False, False), (3, False, True)]
    assert all("ConnectionRefusedError" in (r.error or "") for r in results.items)


def test_smtp_login_reads_credentials_from_the_environment(
        smtp: tuple[SmtpHandler, int], monkeypatch: pytest.MonkeyPatch) -> None:
    handler, port = smtp
    notifier = build_notifier(email_spec(port, username_env="PROCTOR_T_SMTP_USER",
                                         password_env="PROCTOR_T_SMTP_PASSWORD"))
    monkeypatch.setenv("PROCTOR_T_SMTP_USER", "alerts")
    monkeypatch.setenv("PROCTOR_T_SMTP_PASSWORD", "s3cret")
    notifier.send(make_notification())
    assert handler.logins == [("alerts", "s3cret")]
    assert len(handler.envelopes) == 1

    monkeypatch.setenv("PROCTOR_T_SMTP_PASSWORD", "wrong")
    with pytest.raises(NotifyError) as info:
        notifier.send(make_notification())
    assert not info.value.retryable and "535" in str(info.value)

    monkeypatch.delenv("PROCTOR_T_SMTP_USER")
    with pytest.raises(NotifyError, match="PROCTOR_T_SMTP_USER is not set") as info:
        notifier.send(make_notification())
    assert not info.value.retryable


def test_starttls_against_a_server_without_it_is_not_retried(smtp: tuple[SmtpHandler, int]) -> None:
    handler, port = smtp
    with pytest.raises(NotifyError, match="STARTTLS") as info:
        build_notifier(email_spec(port, starttls=True)).send(make_notification())
    assert not info.value.retryable
    assert handler.envelopes == []


# --------------------------------------------------------------------------- log


def test_log_notifier_writes_one_record(caplog: pytest.LogCaptureFixture) -> None:
    notifier = build_notifier({"id": "log", "type": "log"})
    assert isinstance(notifier, LogNotifier)
    with caplog.at_level(logging.INFO, logger="proctor.alerts"):
        notifier.send(make_notification(action="terminate_session"))
        notifier.send(make_notification(status="resolved", n_alerts=2))
    records = [r for r in caplog.records if r.name == "proctor.alerts"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert records[0].getMessage() == ("[FIRING] cost-rate (critical): session s-1 spends $1.20/min "
                                       "[action: terminate_session] (1 alert, group cost-rate/session_id=s-1)")
    assert records[1].getMessage().startswith("[RESOLVED] cost-rate")
    assert records[1].notification["status"] == "resolved"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(("spec", "message"), [
    ({"id": "x", "type": "pager"}, "unknown type 'pager'"),
    ({"id": "x"}, "missing 'type'"),
    ({"type": "log"}, "missing 'id'"),
    ({"id": "ops", "type": "webhook"}, "notifier 'ops' (webhook): missing required key 'url'"),
    ({"id": "chat", "type": "slack", "url": ""}, "missing required key 'url'"),
    ({"id": "ops", "type": "webhook", "url": "ftp://x"}, "must start with http:// or https://"),
    ({"id": "ops", "type": "webhook", "url": "http://x", "verb": "PUT"}, "unknown key(s) 'verb'"),
    ({"id": "ops", "type": "webhook", "url": "http://x", "timeout_s": 0}, "'timeout_s' must be a positive"),
    ({"id": "mail", "type": "email", "host": "h", "from": "a@b"}, "notifier 'mail' (email): missing required key 'to'"),
    ({"id": "mail", "type": "email", "host": "h", "from": "a@b", "to": []}, "missing required key 'to'"),
    ({"id": "mail", "type": "email", "from": "a@b", "to": ["c@d"]}, "missing required key 'host'"),
    ({"id": "mail", "type": "email", "host": "h", "from": "a@b", "to": ["c@d"], "port": 70000}, "'port'"),
    ({"id": "mail", "type": "email", "host": "h", "from": "a@b", "to": ["c@d"], "password": "x"},
     "unknown key(s) 'password'"),
    ({"id": "mail", "type": "email", "host": "h", "from": "a@b", "to": ["c@d"], "password_env": "P"},
     "'password_env' needs 'username_env'"),
])
def test_build_notifier_refuses_bad_specs_clearly(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        build_notifier(spec)
    assert message in str(info.value)


def test_notifier_schema_accepts_the_documented_specs_and_refuses_extras() -> None:
    Draft202012Validator.check_schema(NOTIFIER_SCHEMA)
    v = Draft202012Validator(NOTIFIER_SCHEMA)
    good: list[dict[str, Any]] = [
        {"id": "ops", "type": "webhook", "url": "http://127.0.0.1:9000/hook", "headers": {"X-Token": "abc"},
         "timeout_s": 5},
        {"id": "chat", "type": "slack", "url": "http://127.0.0.1:9001/slack"},
        {"id": "mail", "type": "email", "host": "127.0.0.1", "port": 8025, "from": "proctor@localhost",
         "to": ["oncall@x"], "starttls": False, "username_env": "SMTP_USER", "password_env": "SMTP_PASSWORD",
         "timeout_s": 10},
        {"id": "log", "type": "log"},
    ]
    for spec in good:
        assert list(v.iter_errors(spec)) == [], spec
        build_notifier(spec)  # and each builds
    bad: dict[str, dict[str, Any]] = {
        "unknown type": {"id": "x", "type": "pager"},
        "missing url": {"id": "x", "type": "webhook"},
        "log with a url": {"id": "x", "type": "log", "url": "http://x"},
        "email without to": {"id": "m", "type": "email", "host": "h", "from": "a@b"},
        "password in the spec": {"id": "m", "type": "email", "host": "h", "from": "a@b", "to": "c@d",
                                 "password": "x"},
        "bad id": {"id": "has space", "type": "log"},
        "password without user": {"id": "m", "type": "email", "host": "h", "from": "a@b", "to": "c@d",
                                  "password_env": "P"},
    }
    for why, spec in bad.items():
        assert list(v.iter_errors(spec)), why
