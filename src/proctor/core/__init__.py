"""Layer 0: pure data types shared by every other layer. No I/O here."""

from proctor.core.canonical import canonical_json, sha256_hex
from proctor.core.spans import (
    KINDS,
    STATUSES,
    Span,
    SpanKind,
    SpanStatus,
    ToolCallRef,
)

__all__ = [
    "KINDS",
    "STATUSES",
    "Span",
    "SpanKind",
    "SpanStatus",
    "ToolCallRef",
    "canonical_json",
    "sha256_hex",
]
