"""The span store, on SQLite and PostgreSQL: what a user reading traces back would see."""

from __future__ import annotations

import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from proctor.pipeline import Pipeline
from proctor.semconv import decode_protobuf
from proctor.store import BatchWriter, CursorError, SpanStore, TraceFilter, open_engine
from proctor.store.schema import metadata

from spanfactory import agent_trace, any_value, request, span


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    engine = open_engine(db_url)
    yield SpanStore(engine)
    engine.dispose()


def ingest(store: SpanStore, spans, service: str = "svc") -> None:  # type: ignore[no-untyped-def]
    batch = decode_protobuf(request(spans, service)).spans
    writer = BatchWriter(store)
    try:
        Pipeline(writer).submit(batch).result(10)
    finally:
        writer.close()


def test_migrations_create_exactly_the_declared_schema(store: SpanStore) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_reopening_a_migrated_database_keeps_its_rows(db_url: str) -> None:
    engine = open_engine(db_url)
    _, spans = agent_trace()
    ingest(SpanStore(engine), spans)
    engine.dispose()
    engine = open_engine(db_url)
    assert SpanStore(engine).stats()["spans"] == 4
    engine.dispose()


def test_a_trace_is_summarized_from_its_spans(store: SpanStore) -> None:
    tid, spans = agent_trace(agent="support", session="s-42", fail_tool=True)
    ingest(store, spans)
    t = store.get_trace_summary(tid.hex())
    assert t is not None
    assert t["span_count"] == 4
    assert t["root_name"] == "invoke_agent support"
    assert t["agent_name"] == "support"
    assert t["session_id"] == "s-42"
    assert t["error_count"] == 1
    assert t["llm_count"] == 2 and t["tool_count"] == 1
    # only model calls count: 100 + 200 input tokens, 20 + 20 output
    assert (t["input_tokens"], t["output_tokens"]) == (300, 40)
    assert t["cost_usd"] > 0
    assert t["duration_ns"] == 100_000_000


def test_sending_the_same_spans_twice_stores_them_once(store: SpanStore) -> None:
    tid, spans = agent_trace()
    ingest(store, spans)
    ingest(store, spans)
    ingest(store, spans[:2])
    t = store.get_trace_summary(tid.hex())
    assert t is not None
    assert t["span_count"] == 4
    assert t["input_tokens"] == 300
    assert len(store.trace_spans(tid.hex())) == 4


def test_a_batch_mixing_new_and_already_stored_spans_counts_each_once(store: SpanStore) -> None:
    tid, spans = agent_trace()
    ingest(store, spans[:2])
    ingest(store, spans)  # two duplicates, two new
    t = store.get_trace_summary(tid.hex())
    assert t is not None
    assert (t["span_count"], t["llm_count"], t["tool_count"]) == (4, 2, 1)
    assert t["input_tokens"] == 300


def test_spans_of_one_trace_arriving_in_pieces_add_up(store: SpanStore) -> None:
    tid, spans = agent_trace()
    for s in reversed(spans):  # children before their root
        ingest(store, [s])
    t = store.get_trace_summary(tid.hex())
    assert t is not None
    assert t["span_count"] == 4 and t["root_name"] == "invoke_agent support"
    assert t["duration_ns"] == 100_000_000


def test_a_parentless_span_added_later_does_not_rename_the_trace(store: SpanStore) -> None:
    # an alert's containment span lands in the trace it stopped, after the fact, without a parent
    tid, spans = agent_trace(agent="kb-researcher")
    later = span("alert cost-spiral", tid, start_ns=spans[0].start_time_unix_nano + 500_000_000,
                 attrs={"gen_ai.agent.name": "alerting"})
    ingest(store, spans)
    ingest(store, [later])
    t = store.get_trace_summary(tid.hex())
    assert t is not None and t["span_count"] == 5
    assert (t["root_name"], t["agent_name"]) == ("invoke_agent kb-researcher", "kb-researcher")
    # the same in one batch, whatever the order
    tid2, spans2 = agent_trace(agent="kb-researcher")
    later2 = span("alert cost-spiral", tid2, start_ns=spans2[0].start_time_unix_nano + 500_000_000)
    ingest(store, [later2, *reversed(spans2)])
    t2 = store.get_trace_summary(tid2.hex())
    assert t2 is not None and t2["root_name"] == "invoke_agent kb-researcher"


def test_trace_filters_select_what_they_name(store: SpanStore) -> None:
    now = time.time_ns()
    t_err, s1 = agent_trace(agent="billing", session="a", tool="issue_refund", fail_tool=True, start_ns=now - 3_000_000_000)
    t_ok, s2 = agent_trace(agent="support", session="b", tool="lookup_customer", model="gpt-4o",
                           start_ns=now - 2_000_000_000, input_tokens=50_000, output_tokens=5_000)
    t_old, s3 = agent_trace(agent="support", session="b", start_ns=now - 7200 * 10**9)
    ingest(store, s1 + s2 + s3)

    def ids(**kw) -> set[str]:  # type: ignore[no-untyped-def]
        return {r["trace_id"] for r in store.list_traces(TraceFilter(**kw)).items}

    assert ids() == {t_err.hex(), t_ok.hex(), t_old.hex()}
    assert ids(agent="billing") == {t_err.hex()}
    assert ids(status="error") == {t_err.hex()}
    assert ids(status="ok") == {t_ok.hex(), t_old.hex()}
    assert ids(tool="issue_refund") == {t_err.hex()}
    assert ids(model="gpt-4o") == {t_ok.hex()}
    assert ids(session_id="b") == {t_ok.hex(), t_old.hex()}
    assert ids(since_ns=now - 3600 * 10**9) == {t_err.hex(), t_ok.hex()}
    assert ids(until_ns=now - 3600 * 10**9) == {t_old.hex()}
    assert ids(min_cost_usd=0.1) == {t_ok.hex()}
    assert ids(min_duration_ms=100) == {t_err.hex(), t_ok.hex(), t_old.hex()}
    assert ids(min_duration_ms=101) == set()
    assert ids(text="refund") == {t_err.hex()}
    assert ids(text="upstream timeout") == {t_err.hex()}
    assert ids(text="100%_") == set()  # LIKE wildcards are matched literally


def test_pagination_walks_every_trace_once_newest_first(store: SpanStore) -> None:
    now = time.time_ns()
    all_spans, expected = [], []
    for i in range(7):
        tid, spans = agent_trace(start_ns=now - i * 1_000_000_000)
        all_spans += spans
        expected.append(tid.hex())
    ingest(store, all_spans)
    seen, cursor = [], None
    while True:
        page = store.list_traces(limit=3, cursor=cursor)
        seen += [r["trace_id"] for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


def test_a_forged_cursor_is_refused_clearly(store: SpanStore) -> None:
    with pytest.raises(CursorError, match="invalid cursor"):
        store.list_traces(cursor="not-a-cursor!")


def test_sessions_group_their_traces(store: SpanStore) -> None:
    ingest(store, agent_trace(session="conv-1")[1] + agent_trace(session="conv-1")[1] + agent_trace(session="conv-2")[1])
    sessions = {s["session_id"]: s for s in store.list_sessions().items}
    assert sessions["conv-1"]["trace_count"] == 2
    assert sessions["conv-2"]["trace_count"] == 1
    assert sessions["conv-1"]["span_count"] == 8
    assert len(store.session_traces("conv-1")) == 2


def test_stats_give_counts_cost_and_percentiles_by_agent_and_tool(store: SpanStore) -> None:
    ingest(store, agent_trace(agent="a", tool="t1")[1] + agent_trace(agent="a", tool="t1", fail_tool=True)[1]
           + agent_trace(agent="b", tool="t2")[1])
    st = store.stats()
    assert st["traces"] == 3 and st["spans"] == 12 and st["errors"] == 1
    assert st["cost_usd"] > 0
    by_agent = {g["name"]: g for g in st["by_agent"]}
    assert by_agent["a"]["count"] == 2 and by_agent["a"]["errors"] == 1
    assert by_agent["a"]["duration_ms"]["p50"] == 100.0
    by_tool = {g["name"]: g for g in st["by_tool"]}
    assert by_tool["t1"]["count"] == 2 and by_tool["t1"]["errors"] == 1
    assert by_tool["t2"]["duration_ms"] == {"p50": 20.0, "p95": 20.0, "max": 20.0}
    assert store.stats(TraceFilter(agent="b"))["traces"] == 1


def test_raw_attributes_are_kept_verbatim_beside_canonical_fields(store: SpanStore) -> None:
    _, spans = agent_trace()
    spans[1].attributes.add(key="vendor.custom", value=any_value([1, 2, 3]))
    ingest(store, spans)
    llm = store.get_span(spans[1].span_id.hex())
    assert llm is not None
    assert llm["attributes"]["vendor.custom"] == [1, 2, 3]
    assert llm["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert llm["model"] == "gpt-4o-mini" and llm["kind"] == "llm" and llm["provider"] == "openai"
    assert llm["tool_calls"][0]["name"] == "lookup_customer"


def test_a_span_repeated_inside_one_batch_is_stored_and_counted_once(store: SpanStore) -> None:
    tid, spans = agent_trace()
    ingest(store, spans + spans[1:3])
    t = store.get_trace_summary(tid.hex())
    assert t is not None
    assert (t["span_count"], t["llm_count"], t["input_tokens"]) == (4, 2, 300)
