"""Alert notifiers: where a firing or resolved alert is sent, and the dispatcher that sends it.

The alert engine hands a :class:`Notification` (one rule, one status, one or more alerts that
changed state together) to :meth:`Dispatcher.submit` with the ids of the notifiers its rule names.
Four kinds of notifier, built from a YAML spec by :func:`build_notifier`:

``webhook``
    ``POST`` of ``Notification.to_json()`` as ``application/json``::

        {"version": "1", "source": "proctor", "rule_id": ..., "status": "firing" | "resolved",
         "severity": "info" | "warning" | "critical", "summary": ..., "group_key": ...,
         "action": "terminate_session" | null, "alerts": [ {id, rule_id, status, group, value,
         summary, started_ns, fired_ns, resolved_ns, labels, evidence, url}, ... ]}

    Receivers dedupe on ``group_key`` + ``status``. Configured ``headers`` are sent as given.
``slack``
    ``POST`` of a Slack incoming-webhook body: ``text`` ("[FIRING] rule-id (critical): summary")
    and ``blocks`` (mrkdwn sections: the headline, one line per alert with its group, value and
    link, and a context line with the group key and the containment taken).
``email``
    One message over SMTP (``smtplib``): subject "[Proctor FIRING] rule-id: summary", a plain-text
    body listing every alert (group, value, times in ISO 8601 UTC, evidence trace ids, link).
    Optional STARTTLS and login; the credentials are read at send time from the environment
    variables the spec names, so they never sit in a rule file.
``log``
    One record on the ``proctor.alerts`` logger: WARNING when firing, INFO when resolved.

Retry policy. A notifier raises :class:`NotifyError` saying whether the failure is worth retrying:
HTTP 408, 429 and 5xx, connection errors and timeouts, SMTP 4xx replies and a refused or dropped
SMTP connection are; other HTTP 4xx (and 3xx: redirects are not followed), SMTP 5xx and bad
configuration are not. A retryable failure is tried again after
``base_backoff_s * 2**(attempt-1) * uniform(0.5, 1.5)`` seconds, capped at ``max_backoff_s`` — or
after the receiver's ``Retry-After`` (on 429/503, same cap) — until ``max_attempts`` attempts;
then the notification is given up. Every attempt is reported to
``on_result`` as a :class:`DeliveryResult`; the last one for a (notification, notifier) pair has
``final=True``.

Each notifier has its own queue and worker thread, so a dead receiver delays only itself, and
its notifications go out in the order they were submitted (a "resolved" never overtakes its
"firing"). ``submit`` only appends to those queues: it never blocks and never raises.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable

import httpx
import orjson

from proctor.core.timeparse import format_ns

log = logging.getLogger("proctor.telemetry.notify")
alerts_log = logging.getLogger("proctor.alerts")

PAYLOAD_VERSION = "1"
DEFAULT_HTTP_TIMEOUT_S = 5.0
DEFAULT_SMTP_TIMEOUT_S = 10.0
MAX_LISTED_ALERTS = 20  # a chat message or a mail body lists this many alerts, then "and N more"


# --------------------------------------------------------------------------- the message


@dataclass(frozen=True)
class Notification:
    """One message about one or more alerts of one rule that changed state together."""

    rule_id: str
    status: str  # "firing" | "resolved"
    severity: str  # "info" | "warning" | "critical"
    summary: str  # one line, already rendered
    alerts: list[dict[str, Any]]  # each alert's JSON (id, group, value, evidence, url, ...)
    group_key: str  # stable id of the (rule, group) batch, for receivers to dedupe
    action: str | None = None  # containment taken, e.g. "terminate_session"

    def to_json(self) -> dict[str, Any]:
        """The generic webhook payload."""
        return {
            "version": PAYLOAD_VERSION,
            "source": "proctor",
            "rule_id": self.rule_id,
            "status": self.status,
            "severity": self.severity,
            "summary": self.summary,
            "group_key": self.group_key,
            "action": self.action,
            "alerts": list(self.alerts),
        }

    def headline(self) -> str:
        """``[FIRING] rule-id (critical): summary`` — the one-line form every notifier uses."""
        return f"[{self.status.upper()}] {self.rule_id} ({self.severity}): {_one_line(self.summary)}"


class NotifyError(Exception):
    """A delivery failed. ``retryable`` says whether trying again later may help;
    ``retry_after_s`` is the receiver's own hint (HTTP ``Retry-After``), if it gave one."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@runtime_checkable
class Notifier(Protocol):
    id: str
    kind: str  # "webhook" | "slack" | "email" | "log"

    def send(self, n: Notification) -> None:
        """Deliver ``n`` or raise :class:`NotifyError`."""
        ...


# --------------------------------------------------------------------------- rendering helpers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _format_group(group: Any) -> str:
    if isinstance(group, Mapping) and group:
        return ", ".join(f"{k}={v}" for k, v in group.items())
    return "(all)"


def _format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _trace_ids(alert: Mapping[str, Any]) -> list[str]:
    evidence = alert.get("evidence")
    if isinstance(evidence, Mapping):
        ids = evidence.get("trace_ids")
        if isinstance(ids, list):
            return [str(i) for i in ids]
    return []


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_body(n: Notification) -> dict[str, Any]:
    """The Slack incoming-webhook body for ``n``: ``text`` plus mrkdwn ``blocks``."""
    headline = n.headline()
    lines = []
    for alert in n.alerts[:MAX_LISTED_ALERTS]:
        line = f"• {_slack_escape(_format_group(alert.get('group')))} — value {_format_value(alert.get('value'))}"
        url = alert.get("url")
        if url:
            line += f" — <{_slack_escape(str(url))}|open>"
        lines.append(line)
    if len(n.alerts) > MAX_LISTED_ALERTS:
        lines.append(f"… and {len(n.alerts) - MAX_LISTED_ALERTS} more")
    context = f"group `{_slack_escape(n.group_key)}`"
    if n.action:
        context += f" · action taken: `{_slack_escape(n.action)}`"
    blocks: list[dict[str, Any]] = [
        # Slack refuses a section text over 3,000 characters.
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(f"*{_slack_escape(headline)}*", 3000)}},
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _truncate("\n".join(lines), 3000)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate(context, 3000)}]})
    return {"text": headline, "blocks": blocks}


def email_subject(n: Notification) -> str:
    return f"[Proctor {n.status.upper()}] {_one_line(n.rule_id)}: {_one_line(n.summary)}"


def email_body(n: Notification) -> str:
    """The plain-text mail body for ``n``."""
    out = [n.headline()]
    if n.action:
        out.append(f"Action taken: {n.action}")
    out.append(f"Group key: {n.group_key}")
    out.append("")
    out.append(f"Alerts ({len(n.alerts)}):")
    for i, alert in enumerate(n.alerts[:MAX_LISTED_ALERTS], start=1):
        out.append(f"{i}. group: {_format_group(alert.get('group'))}")
        out.append(f"   value: {_format_value(alert.get('value'))}")
        for key in ("started_ns", "fired_ns", "resolved_ns"):
            ns = alert.get(key)
            if isinstance(ns, int):
                out.append(f"   {key.removesuffix('_ns')}: {format_ns(ns)}")
        traces = _trace_ids(alert)
        out.append(f"   traces: {', '.join(traces) if traces else '(none)'}")
        if alert.get("url"):
            out.append(f"   url: {alert['url']}")
    if len(n.alerts) > MAX_LISTED_ALERTS:
        out.append(f"... and {len(n.alerts) - MAX_LISTED_ALERTS} more")
    out.append("")
    out.append("-- Proctor")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTTP notifiers


def _retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _HttpPoster:
    """POSTs JSON to one URL with its own pooled client; maps failures to :class:`NotifyError`."""

    def __init__(self, url: str, headers: Mapping[str, str] | None, timeout_s: float) -> None:
        self.url = url
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # trust_env=False: no proxy or netrc from the environment — we call only what the
                # user configured, and loopback receivers must not be routed through a proxy.
                self._client = httpx.Client(timeout=self.timeout_s, trust_env=False, follow_redirects=False)
            return self._client

    def post(self, body: dict[str, Any]) -> None:
        content = orjson.dumps(body)
        headers = {"content-type": "application/json", **self.headers}
        try:
            r = self._get_client().post(self.url, content=content, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise NotifyError(f"POST {self.url}: {e}", retryable=False) from e
        except httpx.TimeoutException as e:
            raise NotifyError(f"POST {self.url}: timed out after {self.timeout_s:g} s", retryable=True) from e
        except httpx.TransportError as e:
            raise NotifyError(f"POST {self.url}: {type(e).__name__}: {e}", retryable=True) from e
        if 200 <= r.status_code < 300:
            return
        detail = _one_line(r.text[:200]) if r.content else ""
        message = f"POST {self.url}: HTTP {r.status_code}" + (f": {detail}" if detail else "")
        retryable = r.status_code in (408, 429) or r.status_code >= 500
        retry_after = _retry_after_s(r) if r.status_code in (429, 503) else None
        raise NotifyError(message, retryable=retryable, retry_after_s=retry_after)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class WebhookNotifier:
    """POSTs :meth:`Notification.to_json` to a URL."""

    kind = "webhook"

    def __init__(self, id: str, url: str, *, headers: Mapping[str, str] | None = None,
                 timeout_s: float = DEFAULT_HTTP_TIMEOUT_S) -> None:
        self.id = id
        self._http = _HttpPoster(url, headers, timeout_s)

    @property
    def url(self) -> str:
        return self._http.url

    def send(self, n: Notification) -> None:
        self._http.post(n.to_json())

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.id!r}, {self.url!r})"


class SlackNotifier:
    """POSTs a Slack incoming-webhook body (:func:`slack_body`) to a URL."""

    kind = "slack"

    def __init__(self, id: str, url: str, *, headers: Mapping[str, str] | None = None,
                 timeout_s: float = DEFAULT_HTTP_TIMEOUT_S) -> None:
        self.id = id
        self._http = _HttpPoster(url, headers, timeout_s)

    @property
    def url(self) -> str:
        return self._http.url

    def send(self, n: Notification) -> None:
        self._http.post(slack_body(n))

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"SlackNotifier({self.id!r}, {self.url!r})"


# --------------------------------------------------------------------------- email


class EmailNotifier:
    """Sends one plain-text mail per notification over SMTP; a new connection each time
    (alerts are rare, and a long-lived SMTP session would be dropped by the server anyway)."""

    kind = "email"

    def __init__(self, id: str, *, host: str, from_addr: str, to: list[str], port: int = 25,
                 starttls: bool = False, username_env: str | None = None, password_env: str | None = None,
                 timeout_s: float = DEFAULT_SMTP_TIMEOUT_S) -> None:
        self.id = id
        self.host = host
        self.port = port
        self.from_addr = from_addr
        self.to = list(to)
        self.starttls = starttls
        self.username_env = username_env
        self.password_env = password_env
        self.timeout_s = timeout_s

    def message(self, n: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = email_subject(n)
        msg["From"] = self.from_addr
        msg["To"] = ", ".join(self.to)
        msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        # An explicit domain: make_msgid() would otherwise ask DNS for this host's FQDN.
        domain = self.from_addr.rpartition("@")[2].strip("<> ") or "proctor.localhost"
        msg["Message-ID"] = email.utils.make_msgid("proctor-alert", domain=domain)
        msg["X-Proctor-Rule"] = _one_line(n.rule_id)
        msg["X-Proctor-Status"] = n.status
        msg["X-Proctor-Group-Key"] = _one_line(n.group_key)
        msg.set_content(email_body(n))
        return msg

    def _credentials(self) -> tuple[str, str] | None:
        if not self.username_env:
            return None
        user = os.environ.get(self.username_env)
        if not user:
            raise NotifyError(f"email notifier {self.id!r}: environment variable {self.username_env} is not set",
                              retryable=False)
        password = ""
        if self.password_env:
            pw = os.environ.get(self.password_env)
            if pw is None:
                raise NotifyError(
                    f"email notifier {self.id!r}: environment variable {self.password_env} is not set",
                    retryable=False)
            password = pw
        return user, password

    def send(self, n: Notification) -> None:
        msg = self.message(n)
        credentials = self._credentials()
        where = f"SMTP {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if credentials is not None:
                    smtp.login(*credentials)
                smtp.send_message(msg, from_addr=self.from_addr, to_addrs=self.to)
        except smtplib.SMTPRecipientsRefused as e:
            codes = [code for code, _ in e.recipients.values()]
            retryable = bool(codes) and all(400 <= c < 500 for c in codes)
            refused = ", ".join(f"{rcpt} ({code} {_decode(text)})" for rcpt, (code, text) in e.recipients.items())
            raise NotifyError(f"{where}: recipients refused: {refused}", retryable=retryable) from e
        except smtplib.SMTPResponseException as e:
            # Covers sender refused, data refused, authentication failed: the reply code decides.
            retryable = 400 <= e.smtp_code < 500
            raise NotifyError(f"{where}: {e.smtp_code} {_decode(e.smtp_error)}", retryable=retryable) from e
        except smtplib.SMTPNotSupportedError as e:
            raise NotifyError(f"{where}: {e}", retryable=False) from e
        except ssl.SSLError as e:
            raise NotifyError(f"{where}: TLS failed: {e}", retryable=False) from e
        except (smtplib.SMTPException, OSError) as e:
            # Refused or dropped connections, timeouts, DNS failures: the server may come back.
            raise NotifyError(f"{where}: {type(e).__name__}: {e}", retryable=True) from e

    def __repr__(self) -> str:
        return f"EmailNotifier({self.id!r}, {self.host}:{self.port} -> {self.to})"


def _decode(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return _one_line(text)


# --------------------------------------------------------------------------- log


class LogNotifier:
    """One record per notification on ``proctor.alerts``: WARNING when firing, INFO when resolved.
    The payload rides along as ``record.notification`` for structured log handlers."""

    kind = "log"

    def __init__(self, id: str, logger: logging.Logger | None = None) -> None:
        self.id = id
        self.logger = logger or alerts_log

    def send(self, n: Notification) -> None:
        level = logging.INFO if n.status == "resolved" else logging.WARNING
        message = n.headline()
        if n.action:
            message += f" [action: {n.action}]"
        self.logger.log(level, "%s (%d alert%s, group %s)", message, len(n.alerts),
                        "" if len(n.alerts) == 1 else "s", n.group_key,
                        extra={"notification": n.to_json()})

    def __repr__(self) -> str:
        return f"LogNotifier({self.id!r})"


# --------------------------------------------------------------------------- specs


_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_URL_PATTERN = "^https?://"
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "maximum": 300}
_HTTP_PROPS: dict[str, Any] = {
    "url": {"type": "string", "pattern": _URL_PATTERN, "description": "http:// or https:// URL to POST to"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "extra request headers, e.g. an auth token"},
    "timeout_s": {**_TIMEOUT, "default": DEFAULT_HTTP_TIMEOUT_S},
}
_ID_PROP: dict[str, Any] = {"type": "string", "pattern": _ID_PATTERN, "description": "name the alert rules use"}


def _variant(kind: str, props: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
        "then": {
            "properties": {"id": _ID_PROP, "type": {"const": kind}, **props},
            "required": ["id", "type", *required],
            "additionalProperties": False,
            **extra,
        },
    }


_EMAIL_PROPS: dict[str, Any] = {
    "host": {"type": "string", "minLength": 1},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 25},
    "from": {"type": "string", "minLength": 3, "description": "sender address"},
    "to": {"oneOf": [{"type": "string", "minLength": 3},
                     {"type": "array", "items": {"type": "string", "minLength": 3}, "minItems": 1}],
           "description": "recipient address or list of addresses"},
    "starttls": {"type": "boolean", "default": False},
    "username_env": {"type": "string", "minLength": 1,
                     "description": "name of the environment variable holding the SMTP user"},
    "password_env": {"type": "string", "minLength": 1,
                     "description": "name of the environment variable holding the SMTP password"},
    "timeout_s": {**_TIMEOUT, "default": DEFAULT_SMTP_TIMEOUT_S},
}

NOTIFIER_TYPES = ("webhook", "slack", "email", "log")

NOTIFIER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://proctor.dev/schemas/alert-notifier.json",
    "title": "Proctor alert notifier",
    "type": "object",
    "required": ["id", "type"],
    "properties": {
        "id": _ID_PROP,
        "type": {"enum": list(NOTIFIER_TYPES)},
    },
    "allOf": [
        _variant("webhook", _HTTP_PROPS, ["url"]),
        _variant("slack", _HTTP_PROPS, ["url"]),
        _variant("email", _EMAIL_PROPS, ["host", "from", "to"],
                 dependentRequired={"password_env": ["username_env"]}),
        _variant("log", {}, []),
    ],
}

_ALLOWED_KEYS: dict[str, set[str]] = {
    "webhook": {"id", "type", *_HTTP_PROPS},
    "slack": {"id", "type", *_HTTP_PROPS},
    "email": {"id", "type", *_EMAIL_PROPS},
    "log": {"id", "type"},
}


def build_notifier(spec: Mapping[str, Any]) -> Notifier:
    """A notifier from its spec (one entry of a rule file's ``notifiers:``).

    The caller normally validated ``spec`` against :data:`NOTIFIER_SCHEMA` already; this checks
    again what it relies on and raises :class:`ValueError` naming the notifier and the problem.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a notifier spec must be a mapping, not {type(spec).__name__}")
    nid = spec.get("id")
    if not isinstance(nid, str) or not nid:
        raise ValueError(f"notifier spec is missing 'id' (a non-empty string): {dict(spec)!r}")
    kind = spec.get("type")
    where = f"notifier {nid!r}"
    if kind is None:
        raise ValueError(f"{where}: missing 'type' (one of {', '.join(NOTIFIER_TYPES)})")
    if kind not in _ALLOWED_KEYS:
        raise ValueError(f"{where}: unknown type {kind!r} (expected one of {', '.join(NOTIFIER_TYPES)})")
    unknown = sorted(set(spec) - _ALLOWED_KEYS[kind])
    if unknown:
        raise ValueError(f"{where} ({kind}): unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(sorted(_ALLOWED_KEYS[kind]))}")
    where = f"{where} ({kind})"

    def timeout(default: float) -> float:
        value = spec.get("timeout_s", default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{where}: 'timeout_s' must be a positive number of seconds, not {value!r}")
        return float(value)

    if kind in ("webhook", "slack"):
        url = spec.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError(f"{where}: missing required key 'url'")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: 'url' must start with http:// or https://, not {url!r}")
        headers = spec.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError(f"{where}: 'headers' must map header names to strings")
        cls = WebhookNotifier if kind == "webhook" else SlackNotifier
        return cls(nid, url, headers=headers, timeout_s=timeout(DEFAULT_HTTP_TIMEOUT_S))

    if kind == "email":
        for key in ("host", "from", "to"):
            if not spec.get(key):
                raise ValueError(f"{where}: missing required key {key!r}")
        to = spec["to"]
        recipients = [a.strip() for a in to.split(",") if a.strip()] if isinstance(to, str) else to
        if not isinstance(recipients, list) or not all(isinstance(r, str) and r for r in recipients):
            raise ValueError(f"{where}: 'to' must be an address or a list of addresses")
        port = spec.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"{where}: 'port' must be an integer from 1 to 65535, not {port!r}")
        if spec.get("password_env") and not spec.get("username_env"):
            raise ValueError(f"{where}: 'password_env' needs 'username_env' too")
        return EmailNotifier(
            nid, host=str(spec["host"]), port=port, from_addr=str(spec["from"]), to=recipients,
            starttls=bool(spec.get("starttls", False)), username_env=spec.get("username_env"),
            password_env=spec.get("password_env"), timeout_s=timeout(DEFAULT_SMTP_TIMEOUT_S),
        )

    return LogNotifier(nid)


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one attempt to deliver one notification to one notifier.

    ``attempt`` counts from 1; it is 0 when no attempt was made (unknown notifier, queue full,
    dispatcher closed). ``final`` is True on the last report for this (notification, notifier)."""

    notification: Notification
    notifier_id: str
    attempt: int
    ok: bool
    error: str | None
    final: bool
    ts_ns: int


@dataclass
class _Lane:
    """One notifier's queue and worker. The head of ``queue`` stays there while in flight, so
    ``len(queue)`` counts everything not yet finished and order is kept."""

    notifier: Notifier
    queue: deque[Notification] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None


class Dispatcher:
    """Delivers notifications in background threads with retries and exponential backoff.

    One queue and one worker thread per notifier: a dead receiver holds up only its own queue.
    ``max_queue`` bounds each notifier's queue (in flight included); a notification that finds
    it full is dropped, counted in ``stats["dropped"]`` and reported with ``final=True``.
    ``on_result`` is called from the worker threads (from the caller's thread for a
    notification refused at ``submit``); its exceptions are logged and swallowed.
    """

    def __init__(self, notifiers: Mapping[str, Notifier], *, max_attempts: int = 5, base_backoff_s: float = 0.2,
                 max_backoff_s: float = 30.0, max_queue: int = 10_000,
                 on_result: Callable[[DeliveryResult], None] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("backoffs must not be negative")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_queue = max_queue
        self.on_result = on_result
        self._rng = random.Random()
        self._stats = {"sent": 0, "failed": 0, "retried": 0, "dropped": 0}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # accepted and not yet finished, all lanes
        self._closing = False
        self._stop = threading.Event()  # set when close() gives up waiting: abandon what is left
        self._lanes: dict[str, _Lane] = {}
        for nid, notifier in notifiers.items():
            lane = _Lane(notifier)
            lane.thread = threading.Thread(target=self._run, args=(nid, lane), name=f"proctor-notify-{nid}",
                                           daemon=True)
            self._lanes[nid] = lane
        for lane in self._lanes.values():
            assert lane.thread is not None
            lane.thread.start()

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot: ``sent``, ``failed`` (given up), ``retried`` (failed attempts retried),
        ``dropped`` (refused because the notifier's queue was full or the dispatcher closed)."""
        with self._lock:
            return dict(self._stats)

    @property
    def notifier_ids(self) -> list[str]:
        return list(self._lanes)

    # ---- the caller's side

    def submit(self, n: Notification, notifier_ids: list[str]) -> None:
        """Queue ``n`` for each notifier; never blocks, never raises."""
        try:
            for nid in dict.fromkeys(notifier_ids):  # a notifier named twice gets one message
                self._submit_one(n, nid)
        except Exception:  # never raise into the alert engine
            log.exception("could not queue notification for rule %s", getattr(n, "rule_id", "?"))

    def _submit_one(self, n: Notification, nid: str) -> None:
        lane = self._lanes.get(nid)
        if lane is None:
            self._count("failed")
            self._report(n, nid, 0, False, "unknown notifier", True)
            return
        refused: str | None = None
        with lane.cond:
            if self._closing:
                refused = "dispatcher closed"
            elif len(lane.queue) >= self.max_queue:
                refused = f"queue full ({self.max_queue} pending)"
            else:
                with self._lock:
                    self._pending += 1
                lane.queue.append(n)
                lane.cond.notify()
        if refused is not None:
            self._count("dropped")
            log.warning("notification for rule %s not queued for %s: %s", n.rule_id, nid, refused)
            self._report(n, nid, 0, False, refused, True)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, give the queues until ``timeout_s`` to drain, then abandon what is
        left (each reported with ``final=True``) and close the notifiers. Returns within
        ``timeout_s`` even when a receiver hangs: workers are daemon threads."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._closing = True  # submit() checks it under each lane's lock; the notify below wakes idle workers
        for lane in self._lanes.values():
            with lane.cond:
                lane.cond.notify_all()
        # Keep a little of the budget for the workers to report what they abandon.
        grace = min(0.25, timeout_s * 0.2)
        self.flush(max(0.0, deadline - grace - time.monotonic()))
        self._stop.set()
        for lane in self._lanes.values():
            with lane.cond:
                lane.cond.notify_all()
        for lane in self._lanes.values():
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        for lane in self._lanes.values():
            if lane.thread is not None and lane.thread.is_alive():
                log.warning("notifier %s still busy at close; leaving it behind", lane.notifier.id)
                continue
            closer = getattr(lane.notifier, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    log.exception("closing notifier %s failed", lane.notifier.id)

    # ---- the workers

    def _run(self, nid: str, lane: _Lane) -> None:
        while True:
            with lane.cond:
                while not lane.queue and not self._closing:
                    lane.cond.wait()
                if not lane.queue:
                    return
                n = lane.queue[0]
            if self._stop.is_set():
                self._finish(n, nid, 0, "dispatcher closed before delivery")
            else:
                self._deliver(n, nid, lane.notifier)
            with lane.cond:
                lane.queue.popleft()
            with self._idle:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.notify_all()

    def _deliver(self, n: Notification, nid: str, notifier: Notifier) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                notifier.send(n)
            except NotifyError as e:
                error, retryable, hint = str(e), e.retryable, e.retry_after_s
            except OSError as e:  # a custom notifier's socket trouble: worth another try
                error, retryable, hint = f"{type(e).__name__}: {e}", True, None
            except Exception as e:  # a bug in a notifier: retrying will not fix it
                log.exception("notifier %s raised", nid)
                error, retryable, hint = f"{type(e).__name__}: {e}", False, None
            else:
                self._count("sent")
                self._report(n, nid, attempt, True, None, True)
                return
            if not retryable or attempt >= self.max_attempts:
                why = "not retryable" if not retryable else f"gave up after {attempt} attempts"
                log.warning("alert notification %s -> %s failed (%s): %s", n.rule_id, nid, why, error)
                self._count("failed")
                self._report(n, nid, attempt, False, error, True)
                return
            self._count("retried")
            self._report(n, nid, attempt, False, error, False)
            if self._stop.wait(self._backoff_s(attempt, hint)):
                self._finish(n, nid, attempt, f"dispatcher closed before delivery (last error: {error})")
                return

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(max(0.0, retry_after_s), self.max_backoff_s)
        return min(self.base_backoff_s * 2 ** (attempt - 1) * self._rng.uniform(0.5, 1.5), self.max_backoff_s)

    def _finish(self, n: Notification, nid: str, attempt: int, error: str) -> None:
        self._count("failed")
        self._report(n, nid, attempt, False, error, True)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _report(self, n: Notification, nid: str, attempt: int, ok: bool, error: str | None, final: bool) -> None:
        if self.on_result is None:
            return
        result = DeliveryResult(notification=n, notifier_id=nid, attempt=attempt, ok=ok, error=error,
                                final=final, ts_ns=time.time_ns())
        try:
            self.on_result(result)
        except Exception:
            log.exception("on_result raised for %s -> %s", n.rule_id, nid)

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
