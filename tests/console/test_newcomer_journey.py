"""The console's "done when", end to end: a newcomer who ran `make demo` can, from the browser
alone, find the runaway loop, open its trace, see where the breaker fired, approve the pending
refund, compare two versions of an agent, and verify the audit chain.

The real demo runs as a subprocess, as `make demo` runs it (the fleet first, then it keeps serving),
on a database of its own and a free port. Everything after its login link is clicks and typing in
Chromium: no call to the API or the database decides a step. The one thing read outside the
browser is what the demo prints once the refund is approved: the fleet finishing the held refund.
A screenshot of every step is kept as test-artifacts/console/journey-NN-<step>.png.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from playwright.sync_api import expect

from console.agents import OutputProcess
from console.conftest import ARTIFACTS, DEMO_RUNS

from conftest import free_port

FLEET_TIMEOUT_S = 240  # the fleet's runs, then its summary: ~15 s here
RESUME_TIMEOUT_S = 30  # the demo looks for decided approvals every 0.5 s while it serves


def _demo(folder: Path) -> OutputProcess:
    db = f"sqlite:///{folder / 'proctor.db'}"
    argv = [sys.executable, "-c", "from proctor.cli.main import main; main()", "demo", "--db", db,
            "--runs", str(DEMO_RUNS), "--port", str(free_port())]
    # COLUMNS: a pipe is not a terminal, and at rich's default 80 columns a run's row loses its policy cell
    return OutputProcess(argv, cwd=folder, name="proctor demo", env={"COLUMNS": "200", "PYTHONUNBUFFERED": "1"})


class Shots:
    """journey-NN-<step>.png, numbered in the order taken."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.page, self.n = page, 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("journey-*.png"):  # a shorter run must not leave an older run's last steps
            old.unlink()

    def __call__(self, step: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(ARTIFACTS / f"journey-{self.n:02d}-{step}.png"), full_page=True)


def test_a_newcomer_does_the_whole_tour_from_the_browser(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    demo = _demo(tmp_path)
    try:
        # `make demo` plays the fleet, prints its summary, then serves and prints the login link again
        demo.expect("Serving on http://127.0.0.1:", FLEET_TIMEOUT_S)
        link = demo.expect("Open the console: ", 10).split("Open the console: ", 1)[1].strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/login#key=\S+", link), link
        url = link.split("/login", 1)[0]
        fleet_s = time.monotonic() - started
        shot = Shots(page)

        # --- logged in by the link, onto the overview ---------------------------------------------
        page.goto(link)
        page.wait_for_url(url + "/", timeout=10_000)
        expect(page.locator("h1")).to_have_text("Overview")
        expect(page.locator("a.card", has_text="Firing alerts")).to_contain_text(re.compile(r"[1-9]"))
        shot("overview")

        # --- find the runaway loop: the firing alerts, then the one about a loop breaker -----------
        page.locator("a.card", has_text="Firing alerts").click()
        page.wait_for_url(url + "/alerts")
        loop_row = page.locator("tr.alert-row", has_text="runaway-loop").first
        expect(loop_row).to_contain_text("a loop breaker fired in session")
        shot("alerts")
        loop_row.locator("a.alert-link").click()
        page.wait_for_url(re.compile(r"/alerts/[0-9a-f]+$"))
        expect(page.locator("h1")).to_contain_text("a loop breaker fired")
        breaker_link = page.locator("table.evidence-spans a.span-link")
        expect(breaker_link).to_have_count(1)
        expect(page.locator("table.evidence-decisions")).to_contain_text("runaway-search")
        shot("alert")

        # --- open its trace, at the span where the breaker fired ----------------------------------
        breaker_link.click()
        page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}"))
        page.wait_for_selector("#trace-view.ready")
        # the header names the breaker and its reason
        expect(page.locator("#trace-decisions")).to_contain_text("runaway-search")
        # the breaker's row is selected, marked with the session's termination, and shown as a failure
        row = page.locator(".trow.sel")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("search_kb")
        marker = row.locator(".mk-terminate_session")
        expect(marker).to_be_visible()
        expect(marker).to_have_attribute("title", re.compile(r"terminate_session by runaway-search"))
        assert "err" in (row.get_attribute("class") or "").split()
        # the inspector opened on it: the decision inline, with its rule and reason
        inspector = page.locator("#inspector-body .span-detail:not(.loading)")
        expect(inspector).to_be_visible()
        assert inspector.get_attribute("data-span-id") == row.get_attribute("data-span-id")
        decision = inspector.locator(".insp-decisions tr.decision", has_text="runaway-search")
        expect(decision).to_have_count(1)
        expect(decision.locator(".rule-id")).to_have_text("runaway-search")
        expect(decision).to_contain_text("terminate_session")
        expect(decision.locator(".reasons")).to_contain_text("the same call search_kb 3 times")
        shot("trace-breaker")

        # --- approve the pending refund -----------------------------------------------------------
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Approvals", exact=True).click()
        page.wait_for_url(url + "/approvals")
        pending = page.locator("#h-pending + table tr.approval-row[data-status=pending]", has_text="issue_refund").first
        expect(pending.locator("code.tool")).to_have_text("issue_refund")
        shot("approvals")
        pending.locator("a.open-approval").click()
        page.wait_for_url(re.compile(r"/approvals/[0-9a-f]+$"))
        expect(page.locator("#approval-status")).to_have_text("pending")
        args = page.locator("pre.args").inner_text()
        order = re.search(r'"order_id": "(O-\d+)"', args)
        assert order, f"the held call's arguments name no order: {args}"
        reason = f"Checked {order[1]}: defective on arrival, the refund is due"
        page.fill("#approve-reason", reason)
        shot("approval-review")
        page.click("#approve")
        expect(page.locator("#approval-status")).to_have_text("approved")
        expect(page.locator("#decided-by")).to_contain_text("you")
        expect(page.locator("#decision-reason")).to_have_text(reason)
        shot("approval-approved")
        # the demo, still serving, hands the refund back to the fleet, which now runs it
        finished = demo.expect(re.compile(rf"approval_decided .*approved: refund .* on {order[1]}"),
                               RESUME_TIMEOUT_S)
        assert finished.startswith("✓"), f"the resumed refund did not finish cleanly: {finished}"
        # and the approval page says the agent used it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "the agent ran the call" not in page.locator("#outcome").inner_text():
            time.sleep(0.3)
            page.reload()
        expect(page.locator("#outcome")).to_contain_text("the agent ran the call")
        shot("approval-used")

        # --- compare two versions of an agent: the canary against the stable one -------------------
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Agents", exact=True).click()
        page.wait_for_url(url + "/agents")
        page.get_by_role("link", name="support-triage", exact=True).click()
        page.wait_for_url(url + "/agents/support-triage")
        expect(page.locator("table.deployments tr[data-env=prod]")).to_contain_text("1.4.0")
        expect(page.locator("table.deployments tr[data-env=staging]")).to_contain_text("1.5.0-rc.1")
        shot("agent")
        compare = page.locator("form.compare")
        expect(compare.get_by_label("Older (left)").locator("option:checked")).to_contain_text("1.4.0")
        expect(compare.get_by_label("Newer (right)").locator("option:checked")).to_contain_text("1.5.0-rc.1")
        compare.get_by_role("button", name="Compare").click()
        page.wait_for_url(re.compile(r"/diff\?"))
        expect(page.locator(".diff-side.left")).to_contain_text("1.4.0")
        expect(page.locator(".diff-side.right")).to_contain_text("1.5.0-rc.1")
        model = page.locator("#changes tr.change.area-model")
        expect(model.first).to_be_visible()
        before, after = " ".join(model.locator("td.before").all_inner_texts()), " ".join(
            model.locator("td.after").all_inner_texts())
        assert "gpt-4o-mini" in before and "claude-3-5-haiku" in after, (before, after)
        shot("diff")

        # --- verify the audit chain -----------------------------------------------------------------
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit", exact=True).click()
        page.wait_for_url(url + "/audit")
        page.click("#verify")
        page.wait_for_url(re.compile(r"/audit\?verify=1"))
        verdict = page.locator("#verdict")
        expect(verdict).to_have_class(re.compile(r"\bok\b"))
        expect(verdict).to_contain_text("Chain OK")
        checked = int(re.search(r"(\d+) rows checked", verdict.inner_text())[1])  # type: ignore[index]
        assert checked == int(page.locator("#head-seq").inner_text()) > 0
        shot("audit")
        browser_s = time.monotonic() - started - fleet_s

        # --- Ctrl-C stops the demo cleanly ----------------------------------------------------------
        code = demo.interrupt(20)
        assert code == 0, f"the demo exited with {code} on Ctrl-C; stderr:\n{demo.stderr_tail()}"
        print(f"\njourney: fleet {fleet_s:.1f} s, browser {browser_s:.1f} s, screenshots {shot.n}")
    finally:
        demo.interrupt(20)
        demo.stop()
