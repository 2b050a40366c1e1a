"""The overview: what is happening now, live over server-sent events.

A new span batch shows on an open page within a second of its POST returning; the stream coalesces,
shares one snapshot among browsers, and ends with the server.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from console.conftest import ARTIFACTS, serve, stop
from proctor.store import open_engine
from proctor.store.alerts import AlertRecord, AlertStore, new_id
from proctor.store.approvals import ApprovalStore
from proctor.ui.live import EventStream, SnapshotHub

from conftest import wait_until
from spanfactory import agent_trace, request

PB = {"content-type": "application/x-protobuf"}


def _int(text: str) -> int:
    return int(text.replace(",", "").strip())


def post_trace(url: str, **kwargs: Any) -> str:
    """POST one small agent trace over OTLP/HTTP; returns its trace id once the server has it durably."""
    tid, spans = agent_trace(**kwargs)
    r = httpx.post(url + "/v1/traces", content=request(spans), headers=PB, timeout=10)
    assert r.status_code == 200, r.text
    return tid.hex()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[str]:
    """A server of our own on an empty database (the live tests add spans and must see only theirs)."""
    url, server, thread = serve(f"sqlite:///{tmp_path / 'proctor.db'}")
    try:
        yield url
    finally:
        stop(server, thread)


def test_the_overview_shows_the_demo_at_a_glance(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/")
    doc = console.get("/overview.json").json()
    # headline cards: the demo's traces, spans and cost of the last 24 hours
    assert _int(page.locator('[data-k="headline.traces"]').inner_text()) == doc["headline"]["traces"] > 0
    assert _int(page.locator('[data-k="headline.spans"]').inner_text()) == doc["headline"]["spans"] > 0
    assert page.locator('.card [data-k="headline.cost_usd"]').inner_text() not in ("$0", "–")
    assert _int(page.locator('.card [data-k="headline.error_traces"]').inner_text()) > 0  # the demo fails some runs
    # decisions by effect: the demo's guard allowed most calls, denied some and held refunds
    counts = {r.get_attribute("data-effect"): _int(r.locator("td.num").inner_text())
              for r in page.locator("#effects tr").all()}
    assert counts["allow"] > 0 and counts["require_approval"] > 0 and counts["deny"] > 0
    assert sum(counts.values()) == doc["decisions"]["total"]
    # the held refund waits for a human, linked to its approval page
    assert _int(page.locator('.card [data-k="approvals.pending"]').inner_text()) >= 1
    held = doc["approvals"]["oldest"][0]
    link = page.locator(f'#ap-list a[href="/approvals/{held["id"]}"]')
    assert link.inner_text() == held["tool"] == "issue_refund"
    # cost per minute: an SVG of 60 bars (no chart library), some of them tall
    page.wait_for_selector("#cpm-chart svg")
    heights = [float(h) for h in page.locator("#cpm-chart rect.bar").evaluate_all("rs => rs.map(r => r.getAttribute('height'))")]
    assert len(heights) == 60 and max(heights) > 10
    # and it goes live
    page.wait_for_selector('#live[data-live-state="live"]')
    assert page.locator("#live").inner_text().strip() == "live"


def test_the_overview_updates_within_a_second_of_new_spans(fresh: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(fresh + "/")
    page.wait_for_selector('#live[data-live-state="live"]')
    traces = page.locator('[data-k="headline.traces"]')
    assert traces.inner_text() == "0"
    assert page.locator("#ls-empty").is_visible()
    latencies = []
    for i in range(1, 6):
        time.sleep(0.3)  # spread the posts out: each must show on its own, not only the last
        post_trace(fresh, session=f"sess-live-{i}", agent="support")
        posted = time.monotonic()
        page.wait_for_function(
            "n => document.querySelector('[data-k=\"headline.traces\"]').textContent === String(n)", arg=i,
            polling="raf", timeout=5000)
        latencies.append(time.monotonic() - posted)
    # the live session list names the newest session, linked, with its agent and cost so far
    row = page.locator("#ls-body tr", has=page.locator('a[href="/sessions/sess-live-5"]'))
    assert row.count() == 1 and "support" in row.inner_text() and "$" in row.inner_text()
    assert _int(page.locator('.card [data-k="live_sessions.count"]').inner_text()) == 5
    assert _int(page.locator('[data-k="headline.spans"]').inner_text()) == 20
    worst, median = max(latencies), statistics.median(latencies)
    report = (f"overview live update: POST returned -> number changed on the page: median {median * 1000:.0f} ms, "
              f"worst {worst * 1000:.0f} ms over {len(latencies)} posts")
    print(report)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "overview-live-latency.txt").write_text(report + "\n")
    assert worst < 1.0, latencies


def test_approvals_and_alerts_show_up_without_a_reload(tmp_path: Path, page) -> None:  # type: ignore[no-untyped-def]
    """Approvals and alerts change in other processes, unannounced: the overview polls for them."""
    db = f"sqlite:///{tmp_path / 'proctor.db'}"
    url, server, thread = serve(db)
    engine = open_engine(db)
    try:
        page.goto(url + "/")
        page.wait_for_selector('#live[data-live-state="live"]')
        assert page.locator("#ap-empty").is_visible() and page.locator("#al-empty").is_visible()
        held = ApprovalStore(engine).request(
            digest="d" * 64, tool="issue_refund", arguments={"order": 17, "amount": 180}, policy_hash=None,
            session_id="sess-refund", agent="refund-agent", rule_id="refunds-over-50",
            message="Refunds above $50 need a human", ttl_s=600)
        now = time.time_ns()
        alert = AlertRecord(id=new_id(), rule_id="cost-spiral", group_key="g" * 64, group={"session": "sess-x"},
                            status="firing", severity="critical", summary="session sess-x is spending $2.10/min",
                            value=2.1, labels={}, evidence={}, started_ns=now, updated_ns=now, fired_ns=now)
        AlertStore(engine).save([alert])
        posted = time.monotonic()
        page.locator(f'#ap-list a[href="/approvals/{held.id}"]').wait_for(timeout=6000)
        page.locator(f'#al-list a[href="/alerts/{alert.id}"]').wait_for(timeout=6000)
        print(f"approval and alert on the overview {time.monotonic() - posted:.2f} s after they were stored")
        assert page.locator('.card [data-k="approvals.pending"]').inner_text() == "1"
        assert page.locator('.card [data-k="alerts.firing"]').inner_text() == "1"
        assert "issue_refund" in page.locator("#ap-list").inner_text()
        assert "critical" in page.locator("#al-list").inner_text()
        assert page.locator("#ap-empty").is_hidden() and page.locator("#al-empty").is_hidden()
    finally:
        stop(server, thread)
        engine.dispose()


def _read_stream(url: str, out: list[tuple[float, bytes]], stop_after_s: float,
                 until: Callable[[dict[str, Any]], bool] | None = None) -> None:
    """Collect the data lines of one SSE stream, with arrival times, for at most ``stop_after_s``
    or until a snapshot satisfies ``until``."""
    deadline = time.monotonic() + stop_after_s
    try:
        with httpx.stream("GET", url + "/live/overview", timeout=stop_after_s + 5) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            for line in s.iter_lines():
                if line.startswith("data: "):
                    out.append((time.monotonic(), line[6:].encode()))
                    if until is not None and until(orjson.loads(line[6:])):
                        return
                if time.monotonic() > deadline:
                    return
    except httpx.HTTPError:
        out.append((time.monotonic(), b"<error>"))


def test_a_burst_of_spans_makes_few_snapshots_shared_by_every_browser(fresh: str) -> None:
    streams: list[list[tuple[float, bytes]]] = [[], [], []]

    def all_in(doc: dict[str, Any]) -> bool:
        return bool(doc["headline"]["traces"] == 30)

    readers = [threading.Thread(target=_read_stream, args=(fresh, s, 30.0, all_in)) for s in streams]
    for r in readers:
        r.start()
    assert wait_until(lambda: all(streams), timeout=5)  # each got its first snapshot
    started = time.monotonic()
    for i in range(30):  # 30 batches, one after the other
        post_trace(fresh, session=f"burst-{i % 3}")
    burst_s = time.monotonic() - started
    for r in readers:
        r.join(35)
    print(f"30 batches in {burst_s:.2f} s -> {len(streams[0]) - 1} snapshots per browser")
    for s in streams:
        during = [t for t, _ in s if t >= started]
        # coalesced: at most one snapshot per ~250 ms, not one per batch
        assert len(during) <= (burst_s + 0.5) / 0.25 + 2, (len(during), burst_s)
        assert len(during) < 30
        last = orjson.loads(s[-1][1])
        assert last["headline"]["traces"] == 30 and last["live_sessions"]["count"] == 3
    # one snapshot per change for everyone: the three browsers got the very same messages
    assert [d for _, d in streams[0]] == [d for _, d in streams[1]] == [d for _, d in streams[2]]


def test_an_open_stream_does_not_hold_up_server_shutdown(tmp_path: Path, page) -> None:  # type: ignore[no-untyped-def]
    url, server, thread = serve(f"sqlite:///{tmp_path / 'proctor.db'}")
    try:
        page.goto(url + "/")
        page.wait_for_selector('#live[data-live-state="live"]')
        raw: list[tuple[float, bytes]] = []
        reader = threading.Thread(target=_read_stream, args=(url, raw, 30.0))
        reader.start()
        assert wait_until(lambda: bool(raw), timeout=5)
    finally:
        began = time.monotonic()
        stop(server, thread)
        took = time.monotonic() - began
    assert not thread.is_alive(), "the server did not stop: an event stream held it up"  # type: ignore[attr-defined]
    reader.join(5)
    assert not reader.is_alive(), "the stream did not end with the server"
    print(f"server stopped {took * 1000:.0f} ms after it was asked, with two live streams open")
    assert took < 3.0
    # the page says it lost the stream (and keeps trying)
    page.wait_for_selector('#live[data-live-state="reconnecting"]', timeout=5000)


# --- the hub itself, on an event loop of our own ------------------------------------------------------

def test_the_hub_heartbeats_keeps_one_message_per_slow_client_and_drops_those_that_leave() -> None:
    async def scenario() -> None:
        n = {"calls": 0}

        def compute() -> dict[str, Any]:
            n["calls"] += 1
            return {"n": n["calls"]}

        hub = SnapshotHub(compute, min_interval_s=0.01, poll_s=60, heartbeat_s=0.2)
        client = hub.subscribe()
        events = hub.events(client)
        assert await anext(events) == b"retry: 1000\n\n"
        assert orjson.loads((await anext(events))[6:]) == {"n": 1}
        # nothing changes: a heartbeat comment keeps the connection open
        started = time.monotonic()
        assert await anext(events) == b": heartbeat\n\n"
        assert 0.15 < time.monotonic() - started < 1.0
        # a client that reads nothing while ten changes happen holds one message: the newest
        for _ in range(10):
            hub.changed()
            await asyncio.sleep(0.05)
        assert n["calls"] >= 5
        assert orjson.loads((await anext(events))[6:]) == {"n": n["calls"]}
        # a browser that goes away is dropped at once, not at the next write
        sent: list[dict[str, Any]] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        stream = asyncio.get_running_loop().create_task(EventStream(hub)({"type": "http"}, receive, send))
        await asyncio.sleep(0.1)
        assert hub.clients == 2 and sent[0]["status"] == 200
        gone.set()
        await asyncio.wait_for(stream, 2)
        assert hub.clients == 1
        # closing the hub ends the remaining stream
        hub.close()
        with pytest.raises(StopAsyncIteration):
            await anext(events)

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(scenario(), 30))
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(40)
    assert not runner.is_alive(), "the scenario hung"
    if failure:
        raise failure[0]


def test_the_overview_snapshot_reads_the_same_on_postgresql(db_url: str) -> None:
    url, server, thread = serve(db_url)
    try:
        post_trace(url, session="pg-1", agent="support", fail_tool=True)
        post_trace(url, session="pg-1", agent="support")
        doc = httpx.get(url + "/overview.json", timeout=10).json()
        h = doc["headline"]
        assert (h["traces"], h["spans"], h["error_traces"], h["error_spans"]) == (2, 8, 1, 1)
        assert h["cost_usd"] > 0 and doc["cost_per_minute"]["total_usd"] == pytest.approx(h["cost_usd"])
        assert sum(doc["cost_per_minute"]["calls"]) == 4  # the four model calls, in the last minute or two
        assert sum(doc["cost_per_minute"]["calls"][-2:]) == 4
        assert doc["live_sessions"]["count"] == 1
        (s,) = doc["live_sessions"]["items"]
        assert (s["session_id"], s["agent"], s["traces"]) == ("pg-1", "support", 2)
        assert s["cost_usd"] == pytest.approx(h["cost_usd"])
        assert doc["decisions"]["total"] == 0 and doc["approvals"] == {"pending": 0, "oldest": []}
        assert doc["alerts"] == {"firing": 0, "items": []}
    finally:
        stop(server, thread)
