"""The normalizer on what each dialect really emits (fixtures captured from the real packages).

The fixtures in tests/fixtures/otlp were recorded by tests/conformance/capture.py from the real
instrumentation libraries; tests/conformance/test_conformance.py runs the same libraries live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.core import Span
from proctor.pipeline import CostProcessor
from proctor.semconv import decode_json, normalize
from proctor.semconv.mapping import render_markdown
from proctor.traces import build_tree, causal_links

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
DIALECTS = ["openinference_openai", "openllmetry_openai", "otel_genai_openai_v2", "openai_agents_openinference",
            "pydantic_ai"]


def load(name: str) -> list[Span]:
    batch = decode_json((FIXTURES / f"{name}.json").read_bytes())
    assert batch.rejected == []
    for s in batch.spans:
        normalize(s)
    CostProcessor().process(batch.spans)
    return batch.spans


def _as_rows(spans: list[Span]) -> list[dict]:
    return [
        {"span_id": s.span_id, "parent_span_id": s.parent_span_id, "start_ns": s.start_ns, "end_ns": s.end_ns,
         "kind": s.kind, "tool_call_id": s.tool_call_id, "tool_name": s.tool_name,
         "tool_calls": [{"id": c.id, "name": c.name} for c in s.tool_calls], "links": s.links}
        for s in spans
    ]


@pytest.fixture(params=[d + suffix for d in DIALECTS for suffix in ("", "-stream")])
def spans(request: pytest.FixtureRequest) -> list[Span]:
    return load(request.param)


def test_every_dialect_yields_two_llm_calls_with_model_provider_tokens_and_cost(spans: list[Span]) -> None:
    llm = [s for s in spans if s.kind == "llm"]
    assert len(llm) == 2
    for s in llm:
        assert s.model == "gpt-4o-mini"
        assert s.provider == "openai"
        assert (s.input_tokens, s.output_tokens) == (42, 17)
        assert s.cost_usd is not None and s.cost_usd > 0
        # pydantic-ai prices its own calls (operation.cost); the others are priced by Proctor
        assert s.cost_source == ("span" if "operation.cost" in s.attributes else "genai-prices")


def test_every_dialect_yields_the_tool_span_with_its_name(spans: list[Span]) -> None:
    tools = [s for s in spans if s.kind == "tool"]
    assert len(tools) == 1
    assert tools[0].tool_name == "get_weather"


def test_the_first_llm_call_carries_the_tool_call_it_asked_for(spans: list[Span]) -> None:
    first = min((s for s in spans if s.kind == "llm"), key=lambda s: s.start_ns)
    assert [(c.id, c.name) for c in first.tool_calls] == [("call_weather_1", "get_weather")]


def test_the_tool_span_is_linked_to_the_llm_call_that_asked_for_it(spans: list[Span]) -> None:
    rows = build_tree(_as_rows(spans))
    links = [ln for ln in causal_links(rows) if ln["type"] == "tool_call"]
    assert len(links) == 1
    by_id = {s.span_id: s for s in spans}
    assert by_id[links[0]["from"]].kind == "llm" and by_id[links[0]["to"]].kind == "tool"
    assert links[0]["tool_call_id"] == "call_weather_1"


def test_every_dialect_has_an_agent_span_with_the_agent_name(spans: list[Span]) -> None:
    agents = [s for s in spans if s.kind == "agent"]
    assert "weather_agent" in {s.agent_name for s in agents}


def test_the_session_id_reaches_the_trace(spans: list[Span]) -> None:
    assert "sess-conf-1" in {s.session_id for s in spans}


def test_raw_attributes_are_untouched(spans: list[Span]) -> None:
    # every canonical value we filled came from somewhere; the raw bag still has it verbatim
    for s in spans:
        if s.kind == "llm":
            assert any(k in s.attributes for k in ("gen_ai.request.model", "llm.model_name"))


@pytest.mark.parametrize(
    ("name", "dialect"),
    [("openinference_openai", "openinference"), ("openllmetry_openai", "openllmetry"),
     ("otel_genai_openai_v2", "otel-genai"), ("pydantic_ai", "pydantic-ai"),
     ("openai_agents_openinference", "openinference")],
)
def test_llm_spans_name_their_dialect(name: str, dialect: str) -> None:
    assert {s.dialect for s in load(name) if s.kind == "llm"} == {dialect}


@pytest.mark.parametrize("name", ["openinference_openai", "pydantic_ai", "openllmetry_openai"])
def test_cache_and_reasoning_tokens_are_read_where_the_dialect_reports_them(name: str) -> None:
    for s in load(name):
        if s.kind == "llm":
            assert (s.cache_read_tokens, s.reasoning_tokens) == (8, 3)


def test_agents_sdk_streamed_usage_details_come_from_the_responses_object() -> None:
    llm = [s for s in load("openai_agents_openinference-stream") if s.kind == "llm"]
    assert {(s.cache_read_tokens, s.reasoning_tokens) for s in llm} == {(8, 3)}


def test_tool_arguments_and_results_are_filled_per_dialect() -> None:
    for name in ("openinference_openai", "openai_agents_openinference", "pydantic_ai", "openllmetry_openai"):
        tool = next(s for s in load(name) if s.kind == "tool")
        assert tool.tool_arguments and "Paris" in tool.tool_arguments, name
        assert tool.tool_result and "sunny" in tool.tool_result, name


def _span(attrs: dict, name: str = "x", **kw) -> Span:  # type: ignore[no-untyped-def]
    return Span(trace_id="1" * 32, span_id="2" * 16, name=name, start_ns=1, end_ns=2, attributes=attrs, **kw)


def test_deprecated_otel_genai_keys_still_map() -> None:
    s = normalize(_span({"gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o",
                         "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": "5",
                         "gen_ai.usage.cache_read_input_tokens": 2, "llm.request.type": "chat"}))
    assert (s.kind, s.provider, s.model, s.input_tokens, s.output_tokens, s.cache_read_tokens) == (
        "llm", "openai", "gpt-4o", 10, 5, 2)


def test_the_current_key_wins_over_the_deprecated_one() -> None:
    s = normalize(_span({"gen_ai.usage.prompt_tokens": 1, "gen_ai.usage.input_tokens": 2,
                         "gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}))
    assert s.input_tokens == 2


def test_a_cost_sent_by_the_producer_is_kept_not_recomputed() -> None:
    s = normalize(_span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                         "gen_ai.usage.input_tokens": 1000, "operation.cost": 0.5}))
    CostProcessor().process([s])
    assert (s.cost_usd, s.cost_source) == (0.5, "span")


def test_an_unknown_model_has_no_cost_rather_than_a_wrong_one() -> None:
    s = normalize(_span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "my-private-llm-v9",
                         "gen_ai.usage.input_tokens": 1000}))
    CostProcessor().process([s])
    assert s.cost_usd is None


def test_agent_and_session_fall_back_to_resource_attributes() -> None:
    s = normalize(_span({"gen_ai.operation.name": "chat"},
                        resource={"gen_ai.agent.name": "support", "gen_ai.agent.version": "1.2", "service.name": "x"}))
    assert (s.agent_name, s.agent_version) == ("support", "1.2")


def test_errors_come_from_the_status_and_the_exception_event() -> None:
    s = normalize(_span({}, status="error", status_message="",
                        events=[{"name": "exception", "attributes": {"exception.type": "TimeoutError",
                                                                     "exception.message": "upstream took 30 s"}}]))
    assert (s.error_type, s.error_message) == ("TimeoutError", "upstream took 30 s")


def test_a_span_without_any_marker_is_other() -> None:
    assert normalize(_span({"http.method": "GET"}, name="GET /health")).kind == "other"


def test_malformed_values_do_not_break_normalization() -> None:
    s = normalize(_span({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "lots",
                         "gen_ai.output.messages": "{not json", "gen_ai.request.model": ["a", "list"]}))
    assert s.kind == "llm" and s.input_tokens is None and s.tool_calls == []


def test_the_mapping_document_matches_the_mapping_table() -> None:
    doc = Path(__file__).parents[1] / "docs" / "conventions.md"
    assert doc.read_text() == render_markdown(), "run: python -m proctor.semconv.mapping > docs/conventions.md"


def test_a_provider_genai_prices_does_not_know_is_priced_by_the_model_name() -> None:
    s = normalize(_span({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "my-gateway",
                         "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1000}))
    CostProcessor().process([s])
    assert s.cost_usd is not None and s.cost_usd > 0


@pytest.mark.parametrize("cost", ["nan", "inf", -1.0, "12x"])
def test_a_cost_that_is_not_a_price_is_ignored_and_recomputed(cost: object) -> None:
    s = normalize(_span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                         "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.cost": cost}))
    CostProcessor().process([s])
    assert s.cost_source == "genai-prices" and s.cost_usd is not None and s.cost_usd > 0
