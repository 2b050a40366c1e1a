"""The canonical span: one shape for every dialect that reaches Proctor.

A ``Span`` keeps the producer's raw attributes verbatim in ``attributes`` and fills the
canonical fields beside them. Everything above layer 0 reads the canonical fields; the raw
attributes are there so nothing the producer sent is ever lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class SpanKind(StrEnum):
    """What an agent step *is*, independent of the dialect that described it."""

    AGENT = "agent"
    LLM = "llm"
    TOOL = "tool"
    RETRIEVAL = "retrieval"
    EMBEDDING = "embedding"
    CHAIN = "chain"  # chains, workflows, tasks: structure without a model or tool call of its own
    GUARDRAIL = "guardrail"
    HANDOFF = "handoff"
    OTHER = "other"


class SpanStatus(StrEnum):
    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


KINDS: tuple[str, ...] = tuple(k.value for k in SpanKind)
STATUSES: tuple[str, ...] = tuple(s.value for s in SpanStatus)


@dataclass(slots=True)
class ToolCallRef:
    """A tool call an LLM asked for in its output; joins the tool span that ran it by ``id``."""

    id: str
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class Span:
    """One step of an agent run, normalized.

    Ids are lowercase hex (32 chars for traces, 16 for spans) as in OTLP/JSON. Times are
    nanoseconds since the Unix epoch. Token counts and cost are ``None`` when unknown, never 0
    by default, so "unknown" and "zero" stay different.
    """

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    parent_span_id: str | None = None
    kind: str = SpanKind.OTHER.value
    otel_kind: str | None = None  # the OTel SpanKind (client, server, internal, ...)
    status: str = SpanStatus.UNSET.value
    status_message: str | None = None
    service_name: str | None = None
    scope_name: str | None = None
    dialect: str | None = None  # which convention family filled the canonical fields
    operation: str | None = None  # gen_ai.operation.name or the dialect's equivalent
    # who
    session_id: str | None = None
    user_id: str | None = None
    agent_name: str | None = None
    agent_id: str | None = None
    agent_version: str | None = None
    agent_version_hash: str | None = None
    # model
    model: str | None = None
    request_model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    cost_source: str | None = None  # "span" when the producer sent it, "genai-prices" when computed
    # tools
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_arguments: str | None = None
    tool_result: str | None = None
    tool_calls: list[ToolCallRef] = field(default_factory=list)  # calls requested by an LLM span
    # content (JSON text when the dialect carried structured messages)
    input_value: str | None = None
    output_value: str | None = None
    # errors
    error_type: str | None = None
    error_message: str | None = None
    # raw, verbatim
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_error(self) -> bool:
        return self.status == SpanStatus.ERROR.value
