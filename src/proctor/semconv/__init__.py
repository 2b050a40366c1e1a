"""Layer 1: conventions. OTLP decoding and the dialect normalizer, pure functions over core types."""

from proctor.semconv.normalize import normalize
from proctor.semconv.otlp import (
    DecodedBatch,
    DecodeLimits,
    OTLPDecodeError,
    decode_json,
    decode_protobuf,
    encode_attributes,
    encode_value,
)

__all__ = [
    "DecodeLimits",
    "DecodedBatch",
    "OTLPDecodeError",
    "decode_json",
    "decode_protobuf",
    "encode_attributes",
    "encode_value",
    "normalize",
]
