"""POST /v1/traces as an OTLP/HTTP exporter sees it."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from proctor.semconv import DecodeLimits
from proctor.server import create_app
from proctor.server.otlp import ReceiverLimits

from spanfactory import agent_trace, new_span_id, new_trace_id, request, span

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture
def client(db_url: str):  # type: ignore[no-untyped-def]
    with TestClient(create_app(db_url, limits=ReceiverLimits(max_request_bytes=256 * 1024))) as c:
        yield c


def _otlp_json(tid: str, sid: str, **extra) -> bytes:  # type: ignore[no-untyped-def]
    now = time.time_ns()
    doc = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-agent"}}]},
            "scopeSpans": [{"scope": {"name": "manual"}, "spans": [{
                "traceId": tid, "spanId": sid, "name": "chat gpt-4o", "kind": 3,
                "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 5_000_000),
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 10}},
                    {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": True}]}}},
                ],
                "status": {"code": 2, "message": "rate limited"},
                **extra,
            }]}],
        }]
    }
    return orjson.dumps(doc)


def test_protobuf_batch_is_queryable_when_the_request_returns(client: TestClient) -> None:
    tid, spans = agent_trace()
    r = client.post("/v1/traces", content=request(spans), headers=PB)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert not resp.HasField("partial_success")
    doc = client.get(f"/api/traces/{tid.hex()}").json()
    assert [s["kind"] for s in doc["spans"]] == ["agent", "llm", "tool", "llm"]


def test_json_batch_with_hex_ids_is_accepted_and_answered_in_json(client: TestClient) -> None:
    tid, sid = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    r = client.post("/v1/traces", content=_otlp_json(tid, sid), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {}
    s = client.get(f"/api/spans/{sid}").json()
    assert s["trace_id"] == tid and s["kind"] == "llm" and s["otel_kind"] == "client"
    assert s["input_tokens"] == 1000 and s["output_tokens"] == 10
    assert s["status"] == "error" and s["error_message"] == "rate limited"
    assert s["attributes"]["tags"] == ["a", True]
    assert s["service_name"] == "json-agent"


def test_gzip_bodies_are_accepted(client: TestClient) -> None:
    tid, spans = agent_trace()
    r = client.post("/v1/traces", content=gzip.compress(request(spans)), headers={**PB, "content-encoding": "gzip"})
    assert r.status_code == 200
    assert client.get(f"/api/traces/{tid.hex()}").json()["trace"]["span_count"] == 4


def test_malformed_protobuf_is_a_400_saying_so(client: TestClient) -> None:
    r = client.post("/v1/traces", content=b"\xff\xff\xff not protobuf", headers=PB)
    assert r.status_code == 400
    assert b"not an OTLP ExportTraceServiceRequest" in r.content
    assert client.get("/api/traces").json()["traces"] == []


@pytest.mark.parametrize("body", [b"{", b"[1,2]", b'{"resourceSpans": 5}', b'{"resourceSpans": [{"scopeSpans": 3}]}'])
def test_malformed_json_is_a_400_saying_what_is_wrong(client: TestClient, body: bytes) -> None:
    r = client.post("/v1/traces", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["code"] == 3 and r.json()["message"]


def test_broken_gzip_is_a_400(client: TestClient) -> None:
    r = client.post("/v1/traces", content=b"\x1f\x8b garbage", headers={**PB, "content-encoding": "gzip"})
    assert r.status_code == 400


def test_unknown_content_type_is_refused_with_415(client: TestClient) -> None:
    r = client.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert "application/x-protobuf" in r.json()["message"]


def test_oversized_request_is_a_413_naming_the_limit(client: TestClient) -> None:
    r = client.post("/v1/traces", content=b"\x00" * (300 * 1024), headers=PB)
    assert r.status_code == 413
    assert b"262144 bytes" in r.content


def test_a_gzip_bomb_is_a_413_not_an_out_of_memory(client: TestClient) -> None:
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))
    assert len(bomb) < 256 * 1024
    r = client.post("/v1/traces", content=bomb, headers={**PB, "content-encoding": "gzip"})
    assert r.status_code == 413


def test_invalid_spans_are_rejected_and_named_while_the_rest_are_stored(client: TestClient) -> None:
    tid, good = agent_trace()
    now = time.time_ns()
    bad = [
        span("backwards", tid, start_ns=now, duration_ms=-5),
        span("ancient", tid, start_ns=now - 10 * 365 * 86400 * 10**9),
        span("future", tid, start_ns=now + 30 * 86400 * 10**9),
        span("no trace id", b"\x00" * 16),
    ]
    r = client.post("/v1/traces", content=request(good + bad), headers=PB)
    assert r.status_code == 200
    ps = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert ps.rejected_spans == 4
    for words in ("end time before start time", "too far from now", "invalid trace id", "'ancient'"):
        assert words in ps.error_message
    assert client.get(f"/api/traces/{tid.hex()}").json()["trace"]["span_count"] == 4


def test_json_partial_success_uses_the_otlp_json_names(client: TestClient) -> None:
    body = _otlp_json("5b8efff798038103d269b633813fc60c", "zzzz")
    r = client.post("/v1/traces", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200
    ps = r.json()["partialSuccess"]
    assert ps["rejectedSpans"] == "1" and "invalid span id" in ps["errorMessage"]


def test_oversized_attribute_values_are_truncated_with_a_marker_and_the_rest_kept(db_url: str) -> None:
    tid = new_trace_id()
    sid = new_span_id()
    huge = "x" * 5000
    s = span("tool", tid, sid, attrs={"gen_ai.tool.call.result": huge, "small": "kept", "gen_ai.tool.name": "t"})
    app = create_app(db_url, limits=ReceiverLimits(decode=DecodeLimits(max_attribute_chars=1000)))
    with TestClient(app) as c:
        assert c.post("/v1/traces", content=request([s]), headers=PB).status_code == 200
        got = c.get(f"/api/spans/{sid.hex()}").json()
    value = got["attributes"]["gen_ai.tool.call.result"]
    assert value.startswith("x" * 1000) and value.endswith("[truncated 4000 chars by proctor]")
    assert got["attributes"]["small"] == "kept"
    assert got["tool_result"] == value


def test_resending_a_batch_is_idempotent(client: TestClient) -> None:
    tid, spans = agent_trace()
    for _ in range(3):
        assert client.post("/v1/traces", content=request(spans), headers=PB).status_code == 200
    t = client.get(f"/api/traces/{tid.hex()}").json()["trace"]
    assert t["span_count"] == 4 and t["input_tokens"] == 300


def test_nul_characters_are_stored_on_every_engine_not_refused_forever(client: TestClient) -> None:
    """PostgreSQL text cannot hold NUL; a span carrying one must still be stored (a 503 would
    make every exporter retry it forever)."""
    tid, sid = new_trace_id(), new_span_id()
    s = span("bad\x00name", tid, sid, attrs={"gen_ai.tool.name": "t\x00x", "k": "v\x00"})
    r = client.post("/v1/traces", content=request([s]), headers=PB)
    assert r.status_code == 200, r.content
    got = client.get(f"/api/spans/{sid.hex()}").json()
    assert got["attributes"]["k"] == "v\x00"  # the raw attributes keep it (JSON-escaped)
    assert got["name"] in ("bad\x00name", "bad\ufffdname")  # PostgreSQL gets U+FFFD in plain columns


def test_absurdly_nested_json_values_are_cut_with_a_marker_and_the_span_stored(client: TestClient) -> None:
    inner = '{"stringValue":"x"}'
    deep = '{"arrayValue":{"values":[' * 300 + inner + "]}}" * 300
    body = _otlp_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174").replace(
        b'"attributes":[{"key":"gen_ai.operation.name"',
        b'"attributes":[{"key":"deep","value":' + deep.encode() + b'},{"key":"gen_ai.operation.name"', 1
    )
    r = client.post("/v1/traces", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    value = client.get("/api/spans/eee19b7ec3c1b174").json()["attributes"]["deep"]
    for _ in range(64):
        value = value[0]
    assert value == "…[nested deeper than 64 levels, cut by proctor]"


def test_an_integer_beyond_64_bits_is_kept_as_text(client: TestClient) -> None:
    body = _otlp_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174").replace(
        b'{"intValue":"1000"}', b'{"intValue":"123456789012345678901234567890"}', 1
    )
    r = client.post("/v1/traces", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    got = client.get("/api/spans/eee19b7ec3c1b174").json()
    assert got["attributes"]["gen_ai.usage.input_tokens"] == "123456789012345678901234567890"
    assert got["input_tokens"] is None  # not a count Proctor can trust
