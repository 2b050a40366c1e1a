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
