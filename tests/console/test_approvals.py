"""Approvals in the console: the queue shows the exact call held, and a human's decision on the page
reaches the agent waiting for it.

Each test runs its own server on a fresh database and a real agent in a subprocess (the SDK with a
policy that holds refunds above $50 for approval), sharing that database as a deployment would.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from console.agents import Governed, governed_server
from console.conftest import serve, stop
from proctor.store import open_engine
from proctor.store.approvals import ApprovalStore

POLICY = """
apiVersion: proctor/v1
kind: PolicyBundle
metadata: {name: console-refunds, version: "1"}
spec:
  default_effect: {read: allow, write: deny, external: deny, irreversible: deny}
  tools:
    - {name: issue_refund, side_effect: irreversible}
  rules:
    - {id: refunds-small, tools: issue_refund, when: "args.amount_usd <= 50", effect: allow}
    - id: refunds-large
      tools: issue_refund
      when: "args.amount_usd > 50"
      effect: require_approval
      message: Refunds above $50 need a human
"""


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[Governed]:
    with governed_server(tmp_path, POLICY) as g:
        yield g


def _open_from_queue(page, governed: Governed, approval_id: str, session_id: str) -> str:  # type: ignore[no-untyped-def]
    """The queue lists the held call exactly; its row opens the approval. Returns the trace link."""
    page.goto(governed.url + "/approvals")
    row = page.locator(f"tr[data-approval-id='{approval_id}']")
    expect(row).to_be_visible()
    assert row.get_attribute("data-status") == "pending"
    expect(row.locator("code.tool")).to_have_text("issue_refund")
    args = row.locator("pre.args").inner_text()
    assert '"order_id": "O-7731"' in args and '"amount_usd": 129.5' in args  # pretty JSON, the exact arguments
    expect(row).to_contain_text("refunds-large")
    expect(row).to_contain_text("Refunds above $50 need a human")
    expect(row).to_contain_text("expires in")
    assert row.locator(f"a[href='/sessions/{session_id}']").count() == 1
    trace_href = row.locator("a.trace-link").get_attribute("href")
    assert trace_href and re.fullmatch(r"/traces/[0-9a-f]{32}\?span=[0-9a-f]{16}", trace_href), trace_href
    approval = ApprovalStore(governed.engine).get(approval_id)
    assert row.locator(f"[title*='{approval.digest}']").count() == 1  # digest, in full on hover
    row.locator("a.open-approval").click()
    page.wait_for_url(f"**/approvals/{approval_id}")
    return trace_href


def test_an_approval_granted_on_the_page_lets_the_waiting_agent_proceed(governed: Governed, page) -> None:  # type: ignore[no-untyped-def]
    agent = governed.agent("refund_agent.py", "sess-console-approve")
    try:
        approval_id = agent.expect("PENDING", 60).split()[1]
        trace_href = _open_from_queue(page, governed, approval_id, "sess-console-approve")

        # the approval in full: everything it is bound to
        detail = page.locator(".approval-detail")
        approval = ApprovalStore(governed.engine).get(approval_id)
        expect(detail).to_contain_text(approval.digest)
        expect(detail).to_contain_text(approval.policy_hash or "")
        expect(page.locator("#approval-status")).to_have_text("pending")

        page.fill("#approve-reason", "checked O-7731: delivered damaged, photo on file")
        page.click("#approve")
        page.wait_for_url(f"**/approvals/{approval_id}?done=approved")
        expect(page.locator("#flash")).to_contain_text("Approved by local: checked O-7731")

        # the agent, blocked in wait(), sees the decision and its retried call is released once
        agent.expect("STATUS approved", 20)
        agent.expect("REFUND-RAN O-7731", 20)
        agent.expect("PROCEEDED refunded 129.5 on O-7731", 20)
        assert agent.wait(30) == 0, agent.stderr_tail()

        # the page follows by itself: approved, then used by the agent (no reload by the reader)
        expect(page.locator("#approval-status")).to_have_text("consumed", timeout=10_000)
        expect(page.locator("#decided-by")).to_have_text("local")
        expect(page.locator("#decision-reason")).to_have_text("checked O-7731: delivered damaged, photo on file")
        assert page.locator("#approve").count() == 0 and page.locator("#deny").count() == 0

        # approving twice is refused, and says why
        again = page.request.post(f"{governed.url}/approvals/{approval_id}/approve", form={"reason": "again"},
                                  headers={"accept": "text/html"})
        assert again.status == 409
        assert f"approval {approval_id} already approved by local" in again.text()

        # the trace link names a trace the server has (the agent's spans arrived over OTLP)
        trace_id = trace_href.split("/")[2].split("?")[0]
        assert httpx.get(f"{governed.url}/api/traces/{trace_id}", timeout=10).status_code == 200

        # and the decided approval is in the queue's second section, with who decided
        page.goto(governed.url + "/approvals")
        row = page.locator(f"tr[data-approval-id='{approval_id}']")
        assert row.get_attribute("data-status") == "consumed"
        expect(row).to_contain_text("local")
    finally:
        agent.stop()


def test_an_approval_denied_on_the_page_refuses_the_agent(governed: Governed, page) -> None:  # type: ignore[no-untyped-def]
    agent = governed.agent("refund_agent.py", "sess-console-deny")
    try:
        approval_id = agent.expect("PENDING", 60).split()[1]
        _open_from_queue(page, governed, approval_id, "sess-console-deny")
        page.fill("#deny-reason", "O-7731 was refunded last week")
        page.click("#deny")
        page.wait_for_url(f"**/approvals/{approval_id}?done=denied")
        expect(page.locator("#flash")).to_contain_text("Denied by local: O-7731 was refunded last week")
        expect(page.locator("#approval-status")).to_have_text("denied")

        agent.expect("STATUS denied", 20)
        denied = agent.expect("DENIED", 20)
        assert agent.wait(30) == 0, agent.stderr_tail()
        assert "REFUND-RAN O-7731" not in agent.lines, f"the refund ran although it was denied: {denied}"
        assert "O-7731 was refunded last week" in denied  # the human's reason reaches the agent
    finally:
        agent.stop()


def test_a_decision_needs_a_reason_an_expired_request_cannot_be_decided_and_an_unknown_one_is_404(governed: Governed, page) -> None:  # type: ignore[no-untyped-def]
    engine = governed.engine
    a = ApprovalStore(engine).request(
        digest="ab" * 32, tool="issue_refund", arguments={"order_id": "O-1", "amount_usd": 75},
        policy_hash="cd" * 32, session_id="sess-reasons", agent="refund-agent", rule_id="refunds-large",
        message="Refunds above $50 need a human", ttl_s=600)
    page.goto(f"{governed.url}/approvals/{a.id}")
    # the browser will not send the form without a reason...
    page.click("#approve")
    assert page.url.endswith(f"/approvals/{a.id}")
    assert page.locator("#approve-reason").evaluate("el => !el.validity.valid")
    # ...and the server refuses one that comes without it
    blank = page.request.post(f"{governed.url}/approvals/{a.id}/approve", form={"reason": "  "},
                              headers={"accept": "text/html"})
    assert blank.status == 400 and "A reason is required" in blank.text()
    assert ApprovalStore(engine).get(a.id).status == "pending"
    # a request nobody decided in time shows that, and can no longer be decided
    late = ApprovalStore(engine).request(
        digest="12" * 32, tool="issue_refund", arguments={"order_id": "O-2", "amount_usd": 90},
        policy_hash="cd" * 32, session_id="sess-reasons", agent="refund-agent", rule_id="refunds-large",
        message="Refunds above $50 need a human", ttl_s=0.05)
    time.sleep(0.1)
    page.goto(f"{governed.url}/approvals/{late.id}")
    expect(page.locator("#approval-status")).to_have_text("expired")
    expect(page.locator("#outcome")).to_contain_text("before anyone decided")
    assert page.locator("#approve").count() == 0 and page.locator("#deny").count() == 0
    too_late = page.request.post(f"{governed.url}/approvals/{late.id}/approve", form={"reason": "sorry, late"},
                                 headers={"accept": "text/html"})
    assert too_late.status == 409 and f"approval {late.id} expired at" in too_late.text()
    missing = page.goto(f"{governed.url}/approvals/ffffffffffffffffffffffffffffffff")
    assert missing is not None and missing.status == 404
    expect(page.locator(".error-detail")).to_contain_text("no approval")
    # the JSON twin of the queue carries the same approval
    doc = httpx.get(f"{governed.url}/approvals.json", timeout=10).json()
    assert [p["id"] for p in doc["pending"]] == [a.id] and doc["pending_count"] == 1


APIKEYS = importlib.util.find_spec("proctor.store.apikeys") is not None


@pytest.mark.skipif(not APIKEYS, reason="API keys (proctor.store.apikeys) are not built yet: with no key, "
                                        "auth is off and everyone is the local admin, so roles cannot be tested")
def test_only_an_approver_or_admin_can_decide_and_others_are_told_why(tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    from proctor.store.apikeys import ApiKeys

    db = f"sqlite:///{tmp_path / 'proctor.db'}"
    engine = open_engine(db)
    a = ApprovalStore(engine).request(
        digest="ef" * 32, tool="issue_refund", arguments={"order_id": "O-9", "amount_usd": 300},
        policy_hash="01" * 32, session_id="sess-roles", agent="refund-agent", rule_id="refunds-large",
        message="Refunds above $50 need a human", ttl_s=600)
    keys = ApiKeys(engine)
    _, viewer = keys.create("vera", "viewer")
    _, operator = keys.create("oscar", "operator")
    _, approver = keys.create("alice", "approver")
    url, server, thread = serve(db)
    errors: list[str] = []

    def login(secret: str):  # type: ignore[no-untyped-def]
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        pg = context.new_page()
        pg.set_default_timeout(10_000)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(f"{url}/login?next=/approvals/{a.id}#key={secret}")
        pg.wait_for_url(f"**/approvals/{a.id}")
        return context, pg

    try:
        for secret, name, role in ((viewer, "vera", "viewer"), (operator, "oscar", "operator")):
            context, pg = login(secret)
            try:
                expect(pg.locator("#role-note")).to_contain_text(f"you ({name}) are {role}")
                pg.fill("#approve-reason", "looks fine to me")
                pg.click("#approve")
                expect(pg.locator("#error")).to_contain_text(
                    f"Refused: 'approve' needs the role approver, admin; {name} is {role}")
                expect(pg.locator("#approval-status")).to_have_text("pending")
                assert ApprovalStore(engine).get(a.id).status == "pending"
            finally:
                context.close()

        context, pg = login(approver)
        try:
            assert pg.locator("#role-note").count() == 0
            pg.fill("#approve-reason", "customer is a reseller, amount matches the invoice")
            pg.click("#approve")
            pg.wait_for_url(f"**/approvals/{a.id}?done=approved")
            expect(pg.locator("#flash")).to_contain_text("Approved by alice")
            expect(pg.locator("#decided-by")).to_have_text("alice")
        finally:
            context.close()
        decided = ApprovalStore(engine).get(a.id)
        assert (decided.status, decided.decided_by) == ("approved", "alice")
    finally:
        stop(server, thread)
        engine.dispose()
    assert not errors, f"JavaScript errors on the page: {errors}"
