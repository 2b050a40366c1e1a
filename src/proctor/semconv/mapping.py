"""The convention mapping table: which producer attribute fills which canonical field.

This table *is* the documentation: ``docs/conventions.md`` is generated from it
(``python -m proctor.semconv.mapping > docs/conventions.md``) and a test keeps the two equal.
For each canonical field the keys are listed in priority order; the first key present on a
span wins. Keys are looked up on the span's attributes, then (for the "who" fields) on its
resource attributes.

Dialects covered: OTel GenAI (current and deprecated keys), OpenInference (Arize; also used by
openinference-instrumentation-openai-agents), OpenLLMetry / Traceloop, Logfire and pydantic-ai,
and Proctor's own SDK (``proctor.*``).
"""

from __future__ import annotations

# field -> [(attribute key, dialect)], highest priority first
FIELD_KEYS: dict[str, list[tuple[str, str]]] = {
    "operation": [
        ("gen_ai.operation.name", "otel-genai"),
        ("llm.request.type", "openllmetry"),
    ],
    "session_id": [
        ("proctor.session.id", "proctor"),
        ("gen_ai.conversation.id", "otel-genai"),
        ("session.id", "openinference"),
        ("traceloop.association.properties.session_id", "openllmetry"),
        ("gen_ai.session.id", "other"),
        ("conversation.id", "other"),
    ],
    "user_id": [
        ("proctor.user.id", "proctor"),
        ("user.id", "openinference"),
        ("enduser.id", "otel"),
        ("traceloop.association.properties.user_id", "openllmetry"),
    ],
    "agent_name": [
        ("proctor.agent.name", "proctor"),
        ("gen_ai.agent.name", "otel-genai"),
        ("agent.name", "openinference"),
        ("agent_name", "pydantic-ai"),
        ("traceloop.agent.name", "openllmetry"),
    ],
    "agent_id": [
        ("proctor.agent.id", "proctor"),
        ("gen_ai.agent.id", "otel-genai"),
        ("agent.id", "openinference"),
    ],
    "agent_version": [
        ("proctor.agent.version", "proctor"),
        ("gen_ai.agent.version", "otel-genai"),
        ("agent.version", "openinference"),
    ],
    "agent_version_hash": [
        ("proctor.agent.version_hash", "proctor"),
    ],
    "model": [
        ("gen_ai.response.model", "otel-genai"),
        ("llm.model_name", "openinference"),
        ("embedding.model_name", "openinference"),
        ("gen_ai.request.model", "otel-genai"),
        ("model_name", "pydantic-ai"),
    ],
    "request_model": [
        ("gen_ai.request.model", "otel-genai"),
    ],
    "provider": [
        ("gen_ai.provider.name", "otel-genai"),
        ("gen_ai.system", "otel-genai (deprecated)"),
        ("llm.provider", "openinference"),
        ("llm.system", "openinference"),
    ],
    "input_tokens": [
        ("gen_ai.usage.input_tokens", "otel-genai"),
        ("gen_ai.usage.prompt_tokens", "otel-genai (deprecated)"),
        ("llm.token_count.prompt", "openinference"),
        ("llm.usage.prompt_tokens", "openllmetry (old)"),
    ],
    "output_tokens": [
        ("gen_ai.usage.output_tokens", "otel-genai"),
        ("gen_ai.usage.completion_tokens", "otel-genai (deprecated)"),
        ("llm.token_count.completion", "openinference"),
        ("llm.usage.completion_tokens", "openllmetry (old)"),
    ],
    "cache_read_tokens": [
        ("gen_ai.usage.cache_read.input_tokens", "otel-genai"),
        ("gen_ai.usage.cache_read_input_tokens", "otel-genai (deprecated)"),
        ("gen_ai.usage.input_tokens.cached", "other"),
        ("llm.token_count.prompt_details.cache_read", "openinference"),
        ("gen_ai.usage.details.cache_read_tokens", "pydantic-ai"),
    ],
    "cache_write_tokens": [
        ("gen_ai.usage.cache_creation.input_tokens", "otel-genai"),
        ("gen_ai.usage.cache_creation_input_tokens", "otel-genai (deprecated)"),
        ("gen_ai.usage.input_tokens.cache_write", "other"),
        ("llm.token_count.prompt_details.cache_write", "openinference"),
        ("gen_ai.usage.details.cache_write_tokens", "pydantic-ai"),
    ],
    "reasoning_tokens": [
        ("gen_ai.usage.reasoning.output_tokens", "otel-genai"),
        ("gen_ai.usage.reasoning_tokens", "openllmetry"),
        ("llm.token_count.completion_details.reasoning", "openinference"),
        ("gen_ai.usage.details.reasoning_tokens", "pydantic-ai"),
    ],
    "cost_usd": [
        ("proctor.cost_usd", "proctor"),
        ("gen_ai.usage.cost", "other"),
        ("llm.cost.total", "openinference"),
        ("operation.cost", "pydantic-ai"),
    ],
    "tool_name": [
        ("gen_ai.tool.name", "otel-genai"),
        ("tool.name", "openinference"),
    ],
    "tool_call_id": [
        ("gen_ai.tool.call.id", "otel-genai"),
        ("tool.id", "openinference"),
        ("tool_call.id", "openinference"),
        ("tool.call_id", "other"),
    ],
    "tool_arguments": [
        ("gen_ai.tool.call.arguments", "otel-genai"),
        ("tool_arguments", "pydantic-ai"),
        ("tool.arguments", "other"),
    ],
    "tool_result": [
        ("gen_ai.tool.call.result", "otel-genai"),
        ("tool_response", "pydantic-ai"),
        ("tool.result", "other"),
    ],
    "input_value": [
        ("gen_ai.input.messages", "otel-genai"),
        ("input.value", "openinference"),
        ("traceloop.entity.input", "openllmetry"),
        ("gen_ai.prompt", "otel-genai (deprecated)"),
    ],
    "output_value": [
        ("gen_ai.output.messages", "otel-genai"),
        ("output.value", "openinference"),
        ("traceloop.entity.output", "openllmetry"),
        ("final_result", "pydantic-ai"),
        ("gen_ai.completion", "otel-genai (deprecated)"),
    ],
    "error_type": [
        ("error.type", "otel"),
        ("exception.type", "otel"),
    ],
    "error_message": [
        ("exception.message", "otel"),
    ],
}

# Fields filled from generic "entity" attributes only when the span is of the given kind and
# the field is still empty: OpenInference and OpenLLMetry put a tool's arguments and result,
# and an agent's or tool's name, in attributes shared by every kind of span.
KIND_FIELD_KEYS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "tool": {
        "tool_name": [("traceloop.entity.name", "openllmetry")],
        "tool_arguments": [("input.value", "openinference"), ("traceloop.entity.input", "openllmetry")],
        "tool_result": [("output.value", "openinference"), ("traceloop.entity.output", "openllmetry")],
    },
    "agent": {
        "agent_name": [("traceloop.entity.name", "openllmetry"), ("graph.node.id", "openinference")],
    },
}

# Fields also looked up on resource attributes when the span itself lacks them.
RESOURCE_FIELDS = ("session_id", "user_id", "agent_name", "agent_id", "agent_version", "agent_version_hash")

# Instrumentation scope name prefixes that name the dialect outright (checked in order).
SCOPE_DIALECTS: list[tuple[str, str]] = [
    ("proctor", "proctor"),
    ("openinference.", "openinference"),
    ("opentelemetry.instrumentation.openai_v2", "otel-genai"),
    ("opentelemetry.util.genai", "otel-genai"),
    ("opentelemetry.instrumentation.", "openllmetry"),  # OpenLLMetry packages share this namespace
    ("traceloop", "openllmetry"),
    ("pydantic-ai", "pydantic-ai"),
    ("pydantic_ai", "pydantic-ai"),
    ("logfire", "logfire"),
    ("openai.agents", "openai-agents"),
]

# Marker attributes that decide a span's kind, checked in this order.
KIND_MARKERS: list[tuple[str, str, dict[str, str]]] = [
    ("proctor.span.kind", "proctor", {k: k for k in (
        "agent", "llm", "tool", "retrieval", "embedding", "chain", "guardrail", "handoff", "other")}),
    ("openinference.span.kind", "openinference", {
        "LLM": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "chain", "RETRIEVER": "retrieval",
        "RERANKER": "retrieval", "EMBEDDING": "embedding", "GUARDRAIL": "guardrail",
        "EVALUATOR": "other", "PROMPT": "other", "UNKNOWN": "other",
    }),
    ("gen_ai.operation.name", "otel-genai", {
        "chat": "llm", "text_completion": "llm", "generate_content": "llm", "completion": "llm",
        "embeddings": "embedding", "embedding": "embedding", "execute_tool": "tool",
        "invoke_agent": "agent", "create_agent": "agent", "retrieval": "retrieval",
        "invoke_workflow": "chain", "handoff": "handoff", "guardrail": "guardrail",
    }),
    ("traceloop.span.kind", "openllmetry", {
        "workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool", "unknown": "other",
    }),
    ("llm.request.type", "openllmetry", {
        "chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "retrieval",
    }),
]

# Indexed attributes (flattened lists) that carry the tool calls an LLM asked for:
# (prefix, id suffix, name suffix, arguments suffix)
TOOL_CALL_PATTERNS: list[tuple[str, str, str, str, str]] = [
    ("llm.output_messages.", ".message.tool_calls.", "tool_call.id", "tool_call.function.name",
     "tool_call.function.arguments"),
    ("gen_ai.completion.", ".tool_calls.", "id", "name", "arguments"),
]


def render_markdown() -> str:
    """The mapping as Markdown (docs/conventions.md)."""
    lines = [
        "# Convention mapping",
        "",
        "Generated from `src/proctor/semconv/mapping.py` by",
        "`python -m proctor.semconv.mapping > docs/conventions.md`; a test keeps it current.",
        "",
        "Every span keeps its raw attributes verbatim. Beside them Proctor fills the canonical",
        "fields below; for each field the first key present on the span wins (the order is the",
        "priority). The \"who\" fields (" + ", ".join(f"`{f}`" for f in RESOURCE_FIELDS) + ")",
        "fall back to the resource attributes.",
        "",
        "## Kind",
        "",
        "The first marker attribute present decides the kind:",
        "",
        "| attribute | dialect | value → kind |",
        "|---|---|---|",
    ]
    for key, dialect, values in KIND_MARKERS:
        vals = ", ".join(f"`{v}`→{k}" for v, k in values.items())
        lines.append(f"| `{key}` | {dialect} | {vals} |")
    lines += [
        "",
        "Without a marker: a span with a tool name is a tool span; one with a model and token",
        "counts is an llm span; one with an agent name whose name mentions an agent is an agent",
        "span; a span named like a handoff is a handoff; anything else is `other`.",
        "",
        "## Fields",
        "",
        "| canonical field | attribute keys, in priority order (dialect) |",
        "|---|---|",
    ]
    for fld, keys in FIELD_KEYS.items():
        lines.append(f"| `{fld}` | " + "<br>".join(f"`{k}` ({d})" for k, d in keys) + " |")
    lines += [
        "",
        "## Fields that depend on the kind",
        "",
        "Filled only when the span has this kind and the field is still empty:",
        "",
        "| kind | canonical field | attribute keys, in priority order (dialect) |",
        "|---|---|---|",
    ]
    for kind, fields in KIND_FIELD_KEYS.items():
        for fld, keys in fields.items():
            lines.append(f"| {kind} | `{fld}` | " + "<br>".join(f"`{k}` ({d})" for k, d in keys) + " |")
    lines += [
        "",
        "An agent span with no agent name takes its span name (without an `invoke_agent ` prefix).",
        "",
        "## Tool calls requested by an LLM span",
        "",
        "Collected from these flattened attributes; else from the `tool_call` parts of",
        "`gen_ai.output.messages` (JSON); else from OpenInference `output.value` when it holds an",
        "OpenAI Responses object (`function_call` items, as the OpenAI Agents SDK records them,",
        "whose `usage` also fills missing cache and reasoning token counts):",
        "",
        "| prefix | list segment | id | name | arguments |",
        "|---|---|---|---|---|",
    ]
    for prefix, seg, id_s, name_s, args_s in TOOL_CALL_PATTERNS:
        lines.append(f"| `{prefix}N` | `{seg}M.` | `{id_s}` | `{name_s}` | `{args_s}` |")
    lines += [
        "",
        "## Derived fields",
        "",
        "- `status`: the OTLP status code; `error_message` falls back to the status message and",
        "  then to the `exception` event's `exception.message`; `error_type` to the event's",
        "  `exception.type`.",
        "- `cost_usd`: from the span when it carries one (`cost_source = span`), else computed from",
        "  the model, provider and token counts with genai-prices (`cost_source = genai-prices`).",
        "- Causal links (computed when a trace is read): a tool span whose `tool_call_id` matches a",
        "  tool call requested by an LLM span in the same trace is linked to it (`tool_call`); a",
        "  tool span without a call id is linked to the latest earlier LLM span that asked for a",
        "  tool of the same name and is not yet matched (`matched_by: tool_name`); and",
        "  an agent span under another agent span is linked to it (`spawned_by`). OTLP span links",
        "  are kept as they came.",
        "- Trace totals (tokens, cost) sum the llm and embedding spans only: agent spans often",
        "  repeat their children's usage, and adding both would double it.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render_markdown(), end="")
