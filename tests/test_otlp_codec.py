"""OTLP values survive the trip Python -> protobuf -> Proctor unchanged."""

from __future__ import annotations

import time

from proctor.semconv import decode_protobuf

from spanfactory import new_trace_id, request, span


def test_attribute_values_of_every_type_decode_to_what_was_encoded() -> None:
    attrs = {
        "s": "text é ✓", "i": -(2**62), "f": 0.25, "b": True, "empty": "",
        "list": ["a", 1, False, [2.5]], "map": {"k": "v", "n": {"deep": 1}}, "raw": b"\x00\xff",
    }
    batch = decode_protobuf(request([span("x", new_trace_id(), attrs=attrs, start_ns=time.time_ns())]))
    [got] = batch.spans
    assert got.attributes == {**attrs, "raw": "AP8="}  # bytes come back base64, as OTLP/JSON has them


def test_random_and_mutated_bodies_are_refused_cleanly_or_decoded_never_crash() -> None:
    """Bounded fuzzing (fixed seed, 600 bodies): decoding either raises OTLPDecodeError (a 400)
    or returns spans that the store can serialize."""
    import random

    import orjson

    from proctor.semconv import OTLPDecodeError, decode_json, normalize
    from proctor.store.spans import span_row

    from spanfactory import agent_trace

    rng = random.Random(1234)
    _, spans = agent_trace()
    valid = request(spans)
    valid_json = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "x",
         "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns()),
         "attributes": [{"key": "a", "value": {"intValue": "5"}}]}]}]}]})
    bodies: list[tuple[str, bytes]] = []
    for _ in range(200):
        bodies.append(("pb", rng.randbytes(rng.randint(0, 300))))
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        bodies.append(("pb", bytes(mutated)))
        jm = bytearray(valid_json)
        for _ in range(rng.randint(1, 4)):
            jm[rng.randrange(len(jm))] = rng.choice(b'{}[]",:0123456789abcdefxyz ')
        bodies.append(("json", bytes(jm)))
    decoded = 0
    for kind, body in bodies:
        try:
            batch = (decode_protobuf if kind == "pb" else decode_json)(body)
        except OTLPDecodeError:
            continue
        for s in batch.spans:
            normalize(s)
            span_row(s, 1)
        decoded += 1
    assert decoded > 0  # some mutations still decode: the check above ran on real spans
