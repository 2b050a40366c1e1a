"""Audit in the console: the decision log's hash chain verified on the page, decisions exported for a
time range (JSON Lines and CSV) that an auditor can re-verify offline, and a tampered row found."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import orjson
from playwright.sync_api import expect

from console.conftest import Console, demo_keys, log_in, serve, stop
from proctor.core.timeparse import format_ns, parse_time_ns
from proctor.store import open_engine
from proctor.store.decisions import DecisionLog, chain_hash


def _all_decisions(db: str) -> list[dict]:  # type: ignore[type-arg]
    engine = open_engine(db)
    try:
        return sorted(DecisionLog(engine).list(limit=100_000), key=lambda r: r["seq"])
    finally:
        engine.dispose()


def _reverify(rows: list[dict]) -> None:  # type: ignore[type-arg]
    """What an auditor does with an export: every row's hash from its content, every link to the row before."""
    assert rows, "nothing exported"
    for before, row in zip([None, *rows], rows, strict=False):
        assert chain_hash(row["prev_hash"], row["seq"], row) == row["hash"], f"row {row['seq']} does not verify"
        if before is not None and before["seq"] + 1 == row["seq"]:
            assert row["prev_hash"] == before["hash"], f"row {row['seq']} does not link to row {before['seq']}"


def _from_csv(text: str) -> list[dict]:  # type: ignore[type-arg]
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        row: dict = {k: (v if v != "" else None) for k, v in r.items()}  # type: ignore[type-arg]
        row.update(seq=int(r["seq"]), ts_ns=int(r["ts_ns"]), enforced=r["enforced"] == "true",
                   reasons=json.loads(r["reasons"]))
        rows.append(row)
    return rows


def test_the_demos_chain_verifies_on_the_page(console, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.url + "/audit")
    rows = int(page.locator("#head-seq").inner_text())
    assert rows > 50  # the demo decides a lot
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Chain OK")
    expect(verdict).to_contain_text("checked on page load")
    page.click("#verify")
    page.wait_for_url("**/audit?verify=1")
    expect(verdict).to_contain_text(f"Chain OK: {int(page.locator('#head-seq').inner_text())} rows checked")
    expect(verdict).not_to_contain_text("page load")


def test_decisions_export_for_a_time_range_as_jsonl_and_csv_and_reverify(console, page) -> None:  # type: ignore[no-untyped-def]
    every = _all_decisions(console.db)
    # a range in the middle, typed as a person would (ISO 8601, milliseconds)
    since = format_ns(every[len(every) // 3]["ts_ns"])
    until = format_ns(every[2 * len(every) // 3]["ts_ns"])
    assert since and until
    lo, hi = parse_time_ns(since), parse_time_ns(until)
    expected = [r["seq"] for r in every if lo <= r["ts_ns"] < hi]
    assert 10 < len(expected) < len(every)

    page.goto(console.url + "/audit")
    page.fill("input[name=since]", since)
    page.fill("input[name=until]", until)
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    assert download.suggested_filename.startswith("proctor-decisions-") and download.suggested_filename.endswith(
        ".jsonl")
    lines = Path(download.path()).read_text().splitlines()
    exported = [orjson.loads(line) for line in lines]
    assert [r["seq"] for r in exported] == expected
    assert {"seq", "prev_hash", "hash", "decision_id", "effect", "rule_id", "reasons"} <= set(exported[0])
    _reverify(exported)

    r = console.get("/audit/export", since=since, until=until, format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="proctor-decisions-')
    from_csv = _from_csv(r.text)
    assert [row["seq"] for row in from_csv] == expected
    _reverify(from_csv)

    # no range: the whole log, and the head it was exported against
    whole = console.get("/audit/export")
    seqs = [orjson.loads(line)["seq"] for line in whole.text.splitlines()]
    assert seqs[: len(every)] == [row["seq"] for row in every]
    head_seq = int(whole.headers["x-proctor-chain-head"].split(":")[0])
    assert head_seq >= len(every)
    bad = console.get("/audit/export", since="yesterday-ish")
    assert bad.status_code == 400 and "since: cannot read time" in bad.json()["detail"]


def test_a_row_edited_in_the_database_shows_the_chain_broken_at_that_row(demo_db, tmp_path, page) -> None:  # type: ignore[no-untyped-def]
    source = demo_db.removeprefix("sqlite:///")
    copy = tmp_path / "tampered.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)  # a consistent copy, WAL included
        seq = dst.execute("SELECT min(seq) FROM decisions WHERE effect = 'deny'").fetchone()[0]
        assert seq is not None
        dst.execute("UPDATE decisions SET effect = 'allow' WHERE seq = ?", (seq,))  # a denial made to look allowed
    db = f"sqlite:///{copy}"
    url, server, thread = serve(db)
    tampered = Console(url, db, demo_keys(demo_db).get("you"))  # the copy holds the demo's keys (auth on)
    try:
        log_in(page, url, tampered.key)
        page.goto(url + "/audit")
        page.click("#verify")
        page.wait_for_url("**/audit?verify=1")
        expect(page.locator("#verdict")).to_contain_text(f"Chain broken at row {seq}")
        expect(page.locator("#first-bad-seq")).to_have_text(str(seq))
        expect(page.locator("#problems")).to_contain_text(
            f"seq {seq}: content does not match its hash: the row was edited")
        expect(page.locator("#content-broken")).to_be_visible()
        expect(page.locator(".bad-row pre.json")).to_contain_text('"effect": "allow"')
        doc = tampered.get("/audit.json", verify=1).json()
        assert doc["verification"]["ok"] is False and doc["verification"]["first_bad_seq"] == seq
        assert doc["diagnosis"]["content_ok"] is False and doc["diagnosis"]["link_ok"] is True
    finally:
        stop(server, thread)
