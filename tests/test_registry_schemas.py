"""Tool output schemas inferred from stored traces, and their drift against the window before
and against the pinned schema. Everything that reads the store runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from proctor.registry import schemas
from proctor.registry.schemas import (
    SchemaChange,
    compare_schemas,
    drift_report,
    infer_schema,
    observe_tools,
)
from proctor.semconv import decode_protobuf, normalize
from proctor.store import SpanStore, open_engine

from spanfactory import new_trace_id, request, span

SEC = 1_000_000_000
HOUR = 3600 * SEC
# the earlier window starts ten days ago: recent enough for the OTLP decoder's sanity window
T0 = (time.time_ns() // SEC - 10 * 86_400) * SEC
NOW = T0 + 2 * HOUR  # the latest window is [T0 + HOUR, NOW]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


class Recorder:
    """Builds tool spans through the real OTLP decode + normalize path and stores them;
    remembers each span's (trace_id, span_id) by a label so tests can name the example spans."""

    def __init__(self, engine: Engine) -> None:
        self.store = SpanStore(engine)
        self.pending: list[Any] = []
        self.ids: dict[str, tuple[str, str]] = {}

    def call(
        self,
        tool: str,
        result: Any,
        start_ns: int,
        *,
        label: str | None = None,
        agent: str | None = "support",
        root_agent: str | None = None,
        error: bool = False,
        raw: bool = False,
    ) -> tuple[str, str]:
        tid = new_trace_id()
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.result": result if raw else json.dumps(result),
        }
        if agent is not None:
            attrs["gen_ai.agent.name"] = agent
        parent = None
        if root_agent is not None:  # the agent named on the trace's root span only
            root = span(f"invoke_agent {root_agent}", tid, start_ns=start_ns, attrs={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": root_agent})
            self.pending.append(root)
            parent = root.span_id
        s = span(f"execute_tool {tool}", tid, parent=parent, start_ns=start_ns, attrs=attrs,
                 error="boom" if error else None)
        self.pending.append(s)
        ids = (tid.hex(), s.span_id.hex())
        if label:
            self.ids[label] = ids
        return ids

    def flush(self) -> None:
        decoded = decode_protobuf(request(self.pending))
        assert not decoded.rejected
        batch = [normalize(s) for s in decoded.spans]
        self.store.write(batch)
        self.pending.clear()


def by_path(changes: list[SchemaChange]) -> dict[str, SchemaChange]:
    return {c.path: c for c in changes}


# --- inference and comparison (no store) ------------------------------------------------------


def test_inference_drops_required_everywhere_and_is_order_independent() -> None:
    values = [
        {"id": 1, "customer": {"email": "a@b.c", "name": "A"}, "items": [{"sku": "x", "qty": 1}]},
        {"id": 2, "customer": {"email": "d@e.f"}, "items": [{"sku": "y"}], "note": None},
    ]
    schema = infer_schema(values)
    assert "required" not in json.dumps(schema)
    assert "$schema" not in schema
    assert schema["properties"]["customer"]["properties"].keys() == {"email", "name"}
    assert schema["properties"]["items"]["items"]["properties"]["qty"] == {"type": "integer"}
    assert json.dumps(schema) == json.dumps(schema, sort_keys=True)
    assert infer_schema(reversed(values)) == schema
    # fields some results omit are still declared, so the combined shape loses nothing against
    # either part: only what one part never had reads as added
    assert {(c.kind, c.path) for c in compare_schemas("t", infer_schema(values[:1]), schema)} == {
        ("field_added", "note")
    }


def test_types_are_normalised_and_integer_counts_as_number() -> None:
    number = {"type": "object", "properties": {"price": {"type": "number"}}}
    integer = {"type": "object", "properties": {"price": {"type": "integer"}}}
    assert compare_schemas("t", number, integer) == []  # whole prices in one window: no change
    (c,) = compare_schemas("t", integer, number)  # floats appear where integers were
    assert (c.kind, c.path, c.before, c.after) == ("type_changed", "price", "integer", "number")
    # a type that stops appearing is not a change; a new one is
    nullable = {"properties": {"v": {"type": ["string", "null"]}}}
    assert compare_schemas("t", nullable, {"properties": {"v": {"type": "string"}}}) == []
    assert compare_schemas("t", nullable, {"properties": {"v": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}) == []
    (c,) = compare_schemas("t", {"properties": {"v": {"type": "string"}}}, nullable)
    assert (c.before, c.after) == ("string", ["null", "string"])
    # OpenAPI nullable, enum and const give types too
    assert compare_schemas("t", {"properties": {"v": {"type": "string", "nullable": True}}}, nullable) == []
    assert compare_schemas("t", {"properties": {"v": {"enum": ["a", 1]}}}, {"properties": {"v": {"type": "integer"}}}) == []


def test_paths_walk_nested_objects_and_array_items() -> None:
    before = infer_schema([{"items": [{"sku": "a", "price": 1}], "customer": {"email": "x"}}])
    after = infer_schema([{"items": [{"sku": "a", "price": "1.00"}], "customer": {"phone": "1"}}])
    got = {(c.kind, c.path, json.dumps(c.before), json.dumps(c.after)) for c in compare_schemas("t", before, after)}
    assert got == {
        ("type_changed", "items[].price", '"integer"', '"string"'),
        ("field_removed", "customer.email", '"string"', "null"),
        ("field_added", "customer.phone", "null", '"string"'),
    }
    # a tool returning a list, and a tool whose whole result changed type
    (c,) = compare_schemas("t", infer_schema([[{"id": 1}]]), infer_schema([[{"id": 1, "x": True}]]))
    assert (c.kind, c.path) == ("field_added", "[].x")
    (c,) = compare_schemas("t", infer_schema([{"a": 1}]), infer_schema(["oops"]))
    assert (c.kind, c.path, c.before, c.after) == ("type_changed", "$", "object", "string")


def test_pinned_schemas_with_refs_combinators_and_open_objects() -> None:
    pinned = {
        "$defs": {"customer": {"type": "object", "properties": {"email": {"type": "string"}}}},
        "type": "object",
        "properties": {
            "customer": {"$ref": "#/$defs/customer"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "meta": {"type": "object", "additionalProperties": True, "properties": {"v": {"type": "integer"}}},
            "child": {"$ref": "#"},  # recursive: must not loop
        },
    }
    observed = infer_schema(
        [{"customer": {"email": "a"}, "tags": {"a": "x", "b": "y"}, "meta": {"v": 1, "anything": [1]}}]
    )
    changes = compare_schemas("t", pinned, observed)
    assert [(c.kind, c.path) for c in changes] == [("field_removed", "child")]
    observed = infer_schema([{"customer": {"email": 5}, "tags": {"a": 1}, "meta": {"v": 1}}])
    assert {(c.kind, c.path) for c in compare_schemas("t", pinned, observed)} == {
        ("type_changed", "customer.email"),
        ("type_changed", "tags.a"),  # checked against additionalProperties
        ("field_removed", "child"),
    }
    # genson's own anyOf (object or array) compares branch by branch
    mixed = infer_schema([{"a": 1}, [1, 2]])
    assert "anyOf" in mixed
    changes = compare_schemas("t", mixed, infer_schema([{"a": 1, "b": 2}, ["x"]]))
    assert {(c.kind, c.path) for c in changes} == {("field_added", "b"), ("type_changed", "[]")}


# --- reading the store ------------------------------------------------------------------------


def test_a_field_missing_from_some_results_is_not_removed(engine: Engine) -> None:
    rec = Recorder(engine)
    for i in range(4):
        rec.call("lookup_customer", {"id": i, "email": "a@b.c"}, T0 + i * SEC)
    for i in range(4):  # the latest window: email only sometimes
        result = {"id": i, "email": "a@b.c"} if i % 2 else {"id": i}
        rec.call("lookup_customer", result, T0 + HOUR + i * SEC)
    rec.flush()
    obs = observe_tools(engine, since_ns=T0 + HOUR, until_ns=NOW)["lookup_customer"]
    assert obs.calls == 4 and obs.unparsed == 0
    assert "required" not in json.dumps(obs.schema)
    assert obs.schema == infer_schema([{"id": 1, "email": "x"}, {"id": 2}])
    (drift,) = drift_report(engine, window_ns=HOUR, now_ns=NOW)
    assert drift.vs_earlier == [] and not drift.changed
    assert drift.earlier is not None and drift.earlier.calls == 4


def test_a_type_change_between_windows_names_a_span_of_the_new_type(engine: Engine) -> None:
    rec = Recorder(engine)
    for i in range(5):
        rec.call("get_order", {"id": 100 + i, "total": 10}, T0 + i * SEC)
    rec.call("get_order", {"id": 200, "total": 12}, T0 + HOUR + 1 * SEC)
    rec.call("get_order", {"id": "ord-201", "total": 12}, T0 + HOUR + 2 * SEC, label="first_string")
    rec.call("get_order", {"id": "ord-202", "total": 12}, T0 + HOUR + 3 * SEC)
    rec.call("get_order", {"id": 203, "total": 12.5}, T0 + HOUR + 4 * SEC, label="first_float")
    rec.flush()
    (drift,) = drift_report(engine, window_ns=HOUR, now_ns=NOW)
    changes = by_path(drift.vs_earlier)
    assert changes.keys() == {"id", "total"}
    assert (changes["id"].kind, changes["id"].before, changes["id"].after) == (
        "type_changed", "integer", ["integer", "string"],
    )
    assert changes["id"].example_span == rec.ids["first_string"]  # not the integer span before it
    assert (changes["total"].before, changes["total"].after) == ("integer", "number")
    assert changes["total"].example_span == rec.ids["first_float"]  # a float, not a whole number
    assert drift.observed is not None and drift.observed.first_ns == T0 + HOUR + SEC


def test_a_field_absent_from_every_later_result_is_removed(engine: Engine) -> None:
    rec = Recorder(engine)
    rec.call("lookup_customer", {"customer": {"name": "A", "email": "a@b.c"}}, T0 + 1 * SEC)
    rec.call("lookup_customer", {"customer": {"name": "B", "email": "d@e.f"}}, T0 + 2 * SEC, label="last_old")
    rec.call("lookup_customer", {"customer": {"name": "C"}}, T0 + 3 * SEC)
    for i in range(3):
        rec.call("lookup_customer", {"customer": {"name": "D"}}, T0 + HOUR + i * SEC)
    rec.flush()
    (drift,) = drift_report(engine, window_ns=HOUR, now_ns=NOW)
    (c,) = drift.vs_earlier
    assert (c.tool, c.kind, c.path, c.before, c.after) == (
        "lookup_customer", "field_removed", "customer.email", "string", None,
    )
    assert c.example_span == rec.ids["last_old"]  # the last span that still had it


def test_an_added_field_is_reported_with_a_span_that_has_it(engine: Engine) -> None:
    rec = Recorder(engine)
    rec.call("list_items", {"items": [{"sku": "a"}]}, T0 + SEC)
    rec.call("list_items", {"items": []}, T0 + HOUR + 1 * SEC)
    rec.call("list_items", {"items": [{"sku": "a"}, {"sku": "b", "price": 3.5}]}, T0 + HOUR + 2 * SEC, label="new")
    rec.call("list_items", {"items": [{"sku": "c", "price": 4}]}, T0 + HOUR + 3 * SEC)
    rec.flush()
    (drift,) = drift_report(engine, window_ns=HOUR, now_ns=NOW)
    (c,) = drift.vs_earlier
    assert (c.kind, c.path, c.before, c.after) == ("field_added", "items[].price", None, "number")
    assert c.example_span == rec.ids["new"]


def test_the_pinned_schema_is_compared_with_what_the_tool_returns(engine: Engine) -> None:
    pinned = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "total": {"type": "number"},
            "customer": {"type": "object", "properties": {"email": {"type": "string"}, "name": {"type": "string"}}},
        },
        "required": ["id", "total"],
    }
    rec = Recorder(engine)
    rec.call("get_order", {"id": "o-1", "total": 3, "customer": {"email": "a", "name": "A"}}, T0 + SEC, label="old")
    rec.call("get_order", {"id": 7, "total": 12, "customer": {"email": "b"}}, T0 + HOUR + SEC, label="int_id")
    rec.call("get_order", {"id": 8, "total": 1, "customer": {"email": "c", "phone": "555"}}, T0 + HOUR + 2 * SEC,
             label="phone")
    rec.call("other_tool", {"ok": True}, T0 + HOUR + SEC)
    rec.flush()
    report = drift_report(
        engine, pinned={"get_order": pinned, "never_called": {"type": "object"}, "unpinned": None},
        window_ns=HOUR, now_ns=NOW,
    )
    assert [d.tool for d in report] == ["get_order", "never_called", "other_tool"]
    order, never, other = report
    got = {c.path: (c.kind, c.before, c.after, c.example_span) for c in order.vs_pinned}
    assert got == {
        "id": ("type_changed", "string", "integer", rec.ids["int_id"]),
        "customer.name": ("field_removed", "string", None, rec.ids["old"]),  # last seen in the earlier window
        "customer.phone": ("field_added", None, "string", rec.ids["phone"]),
    }  # total: integers satisfy a pinned number
    assert never.observed is None and never.vs_pinned == [] and never.vs_earlier == []
    assert other.vs_pinned == [] and other.earlier is None and other.vs_earlier == []
    # compare_schemas gives the same changes, without example spans
    assert order.observed is not None
    plain = compare_schemas("get_order", pinned, order.observed.schema)
    assert [c.path for c in plain] == [c.path for c in order.vs_pinned]
    assert all(c.example_span is None for c in plain)


def test_results_that_are_not_json_are_counted_and_skipped(engine: Engine) -> None:
    rec = Recorder(engine)
    rec.call("search", "plain text answer", T0 + SEC, raw=True)
    rec.call("search", '{"hits": [1, 2', T0 + 2 * SEC, raw=True)
    rec.call("search", {"hits": [1, 2]}, T0 + 3 * SEC)
    rec.call("search", {"error": "rate limited"}, T0 + 4 * SEC, error=True)  # failed calls are not shapes
    rec.call("broken", "<html>502</html>", T0 + 5 * SEC, raw=True)
    rec.flush()
    obs = observe_tools(engine, since_ns=T0, until_ns=NOW)
    assert obs["search"].calls == 1 and obs["search"].unparsed == 2
    assert obs["search"].schema == infer_schema([{"hits": [1, 2]}])
    assert (obs["search"].first_ns, obs["search"].last_ns) == (T0 + SEC, T0 + 3 * SEC)
    assert obs["broken"].calls == 0 and obs["broken"].unparsed == 1 and obs["broken"].schema == {}
    # a tool with nothing parsed is reported but not compared (it did not change shape)
    report = drift_report(engine, pinned={"broken": {"type": "object", "properties": {"a": {}}}},
                          window_ns=NOW - T0, now_ns=NOW)
    broken = next(d for d in report if d.tool == "broken")
    assert broken.vs_pinned == [] and broken.observed is not None and broken.observed.unparsed == 1


def test_reading_is_bounded_newest_first_and_paginates_without_gaps(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schemas, "_BATCH", 3)  # several keyset pages, ties on start_ns included
    rec = Recorder(engine)
    for i in range(20):
        rec.call("t", {"n": i}, T0 + (i // 4) * SEC)  # groups of 4 spans share a start time
    rec.call("u", {"x": 1}, T0)
    rec.flush()
    everything = observe_tools(engine, tools=["t"], limit_per_tool=1000)
    assert everything.keys() == {"t"} and everything["t"].calls == 20
    assert (everything["t"].first_ns, everything["t"].last_ns) == (T0, T0 + 4 * SEC)
    bounded = observe_tools(engine, limit_per_tool=7)
    assert bounded["t"].calls + bounded["t"].unparsed == 7
    # the 7 newest: 4 at +4 s and 3 of the 4 at +3 s
    assert (bounded["t"].first_ns, bounded["t"].last_ns) == (T0 + 3 * SEC, T0 + 4 * SEC)
    assert bounded["u"].calls == 1
    with pytest.raises(ValueError):
        observe_tools(engine, limit_per_tool=0)


def test_windows_agent_and_tool_filters(engine: Engine) -> None:
    rec = Recorder(engine)
    rec.call("t", {"a": 1}, T0 + HOUR + SEC, agent="support")
    rec.call("t", {"b": 1}, T0 + HOUR + 2 * SEC, agent="billing")
    rec.call("t", {"c": 1}, NOW, agent="support")  # the latest window includes now
    rec.call("t", {"d": 1}, NOW + 1, agent="support")  # ...and nothing after it
    rec.call("t", {"e": 1}, NOW - SEC, agent=None, root_agent="support")  # agent known from the trace
    rec.call("t", {"f": 1}, NOW - SEC, agent=None, root_agent="billing")
    rec.flush()
    (d,) = drift_report(engine, window_ns=HOUR, now_ns=NOW, agent="support")
    assert d.observed is not None and d.observed.calls == 3
    assert d.observed.schema["properties"].keys() == {"a", "c", "e"}
    assert drift_report(engine, window_ns=HOUR, now_ns=NOW, tools=["other"]) == []
    assert observe_tools(engine, agent="nobody") == {}
