"""The REST API as a client sees it: filters, pagination, errors, the trace tree and stats."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from proctor.server import create_app

from spanfactory import agent_trace, request

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture
def client(db_url: str):  # type: ignore[no-untyped-def]
    with TestClient(create_app(db_url)) as c:
        now = time.time_ns()
        for i, (agent, fail) in enumerate([("support", False), ("billing", True), ("support", False)]):
            _, spans = agent_trace(agent=agent, session=f"s{i % 2}", fail_tool=fail, start_ns=now - (3 - i) * 10**9)
            assert c.post("/v1/traces", content=request(spans), headers=PB).status_code == 200
        yield c


def test_trace_list_filters_and_pages(client: TestClient) -> None:
    assert len(client.get("/api/traces").json()["traces"]) == 3
    assert [t["agent_name"] for t in client.get("/api/traces?status=error").json()["traces"]] == ["billing"]
    assert len(client.get("/api/traces?agent=support&since=1h").json()["traces"]) == 2
    assert client.get("/api/traces?tool=lookup_customer&model=gpt-4o-mini&q=invoke").json()["traces"]
    first = client.get("/api/traces?limit=2").json()
    rest = client.get(f"/api/traces?limit=2&cursor={first['next_cursor']}").json()
    assert len(first["traces"]) == 2 and len(rest["traces"]) == 1 and rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "words"),
    [("since=last-tuesday", "cannot read time"), ("status=broken", "ok"), ("limit=0", "greater than"),
     ("cursor=@@@", "invalid cursor"), ("min_cost=-1", "greater than")],
)
def test_bad_query_parameters_get_a_clear_4xx(client: TestClient, query: str, words: str) -> None:
    r = client.get(f"/api/traces?{query}")
    assert r.status_code in (400, 422)
    assert words in r.text


def test_a_trace_comes_back_as_a_tree_with_links_and_a_span_in_full(client: TestClient) -> None:
    tid = client.get("/api/traces?agent=billing").json()["traces"][0]["trace_id"]
    doc = client.get(f"/api/traces/{tid}").json()
    assert [(s["kind"], s["depth"]) for s in doc["spans"]] == [("agent", 0), ("llm", 1), ("tool", 1), ("llm", 1)]
    assert doc["links"][0]["type"] == "tool_call"
    tool = doc["spans"][2]
    full = client.get(f"/api/spans/{tool['span_id']}").json()
    assert full["status"] == "error" and full["error_message"] == "upstream timeout"
    assert full["attributes"]["gen_ai.tool.name"] == "lookup_customer"
    assert client.get(f"/api/traces/{tid[:8]}").json()["trace"]["trace_id"] == tid


def test_unknown_objects_are_404(client: TestClient) -> None:
    assert client.get("/api/traces/" + "ab" * 16).status_code == 404
    assert client.get("/api/spans/" + "cd" * 8).status_code == 404
    assert client.get("/api/sessions/nope").status_code == 404


def test_sessions_and_stats(client: TestClient) -> None:
    sessions = {s["session_id"]: s for s in client.get("/api/sessions").json()["sessions"]}
    assert sessions["s0"]["trace_count"] == 2
    assert client.get("/api/sessions/s0").json()["trace_count"] == 2
    st = client.get("/api/stats").json()
    assert st["traces"] == 3 and st["errors"] == 1
    assert {g["name"] for g in st["by_tool"]} == {"lookup_customer"}
    assert client.get("/api/stats?agent=billing").json()["traces"] == 1


def test_openapi_describes_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/traces", "/api/traces", "/api/traces/{trace_id}", "/api/spans/{span_id}", "/api/sessions",
            "/api/stats"} <= set(paths)


def test_a_deep_trace_comes_back_whole_in_tree_order(db_url: str) -> None:
    """A 3,000-span chain (each span the child of the previous) is deeper than Python's
    recursion limit: the tree is built iteratively and nothing is cut."""
    from spanfactory import new_span_id, new_trace_id, span

    tid, t0 = new_trace_id(), time.time_ns()
    ids = [new_span_id() for _ in range(3000)]
    spans = [span(f"step {i}", tid, sid, parent=ids[i - 1] if i else None, start_ns=t0 + i, duration_ms=1)
             for i, sid in enumerate(ids)]
    with TestClient(create_app(db_url)) as c:
        assert c.post("/v1/traces", content=request(spans[::-1]), headers=PB).status_code == 200
        doc = c.get(f"/api/traces/{tid.hex()}").json()
    assert [s["depth"] for s in doc["spans"]] == list(range(3000))
    assert doc["trace"]["span_count"] == 3000 and doc["trace"]["root_name"] == "step 0"
