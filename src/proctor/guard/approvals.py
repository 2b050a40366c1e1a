"""Waiting on a human: approval handles and the webhook that announces a request.

The request itself is a durable row (:class:`proctor.store.approvals.ApprovalStore`), bound to
a digest of (tool, canonical arguments, policy hash, session). An agent either waits on the
handle (``wait`` / ``await wait_async``, with a timeout) or keeps the handle's id and calls the
tool again later: the guard then finds the approved request by digest and consumes it, once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx

from proctor.core.canonical import canonical_json, sha256_hex

log = logging.getLogger("proctor.guard")

TERMINAL = frozenset({"approved", "denied", "expired", "consumed"})


def approval_digest(tool: str, args: Any, policy_hash: str, session_id: str | None) -> str:
    """What an approval is bound to: this call, under this policy, in this session."""
    try:
        body = canonical_json({"tool": tool, "args": args, "policy": policy_hash, "session": session_id or ""})
    except (TypeError, ValueError):  # arguments JSON cannot represent exactly: bind to their repr
        body = canonical_json({"tool": tool, "args": repr(args), "policy": policy_hash, "session": session_id or ""})
    return sha256_hex(body)


class ApprovalHandle:
    """A pending approval. ``status`` is read from the store each time."""

    def __init__(self, store: Any, approval_id: str, digest: str, poll_interval_s: float = 0.1) -> None:
        self._store = store
        self.id = approval_id
        self.digest = digest
        self.poll_interval_s = poll_interval_s

    def fetch(self) -> Any:
        """The approval row as it is now, or None if it is gone."""
        from proctor.store.approvals import ApprovalNotFound

        try:
            return self._store.get(self.id)
        except ApprovalNotFound:
            return None

    @property
    def status(self) -> str:
        a = self.fetch()
        if a is None:
            return "missing"
        if a.status == "pending" and a.expires_ns <= time.time_ns():
            return "expired"
        return str(a.status)

    def wait(self, timeout_s: float | None = None) -> str:
        """Block until decided or expired (or ``timeout_s`` passes); return the status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status
            if status in TERMINAL or status == "missing":
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            time.sleep(self.poll_interval_s)

    async def wait_async(self, timeout_s: float | None = None) -> str:
        """``wait`` for asyncio code: polls without blocking the event loop."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = await asyncio.to_thread(lambda: self.status)
            if status in TERMINAL or status == "missing":
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            await asyncio.sleep(self.poll_interval_s)

    def __repr__(self) -> str:
        return f"ApprovalHandle({self.id!r})"


def slack_message(approval: Any, console_url: str | None = None) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body (``text`` + ``blocks``), with the raw request
    under ``proctor`` for receivers that are not Slack."""
    args = approval.arguments if isinstance(approval.arguments, dict) else {}
    arg_lines = "\n".join(f"• `{k}`: {str(v)[:200]}" for k, v in list(args.items())[:20]) or "(no arguments)"
    text = (f"Approval needed: {approval.agent or 'an agent'} wants to call `{approval.tool}` "
            f"({approval.rule_id}: {approval.message or 'policy requires approval'})")
    how = f"`proctor approvals approve {approval.id}` or `proctor approvals deny {approval.id}`"
    if console_url:
        how += f" — {console_url.rstrip('/')}/approvals/{approval.id}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": arg_lines}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"session `{approval.session_id}` · {how}"}]},
        ],
        "proctor": approval.to_dict(),
    }


def post_webhook(url: str, body: dict[str, Any], timeout_s: float = 5.0) -> threading.Thread:
    """POST in the background: a slow chat service must not hold up the agent."""

    def send() -> None:
        try:
            r = httpx.post(url, json=body, timeout=timeout_s)
            if r.status_code >= 300:
                log.warning("approval webhook %s answered %s", url, r.status_code)
        except httpx.HTTPError as e:
            log.warning("approval webhook %s failed: %s", url, e)

    t = threading.Thread(target=send, name="proctor-approval-webhook", daemon=True)
    t.start()
    return t
