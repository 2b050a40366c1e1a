"""The relational schema, as SQLAlchemy Core tables.

This module is the single description of the live schema; Alembic migrations in
``store/migrations`` create it step by step and a test checks the two agree on SQLite and
PostgreSQL. JSON documents are stored as text on both engines: the hot path writes them
already serialized (orjson), and text keeps SQLite and PostgreSQL byte-identical.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_span_id", String(16)),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("otel_kind", String(16)),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ns", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),
    Column("status_message", Text),
    Column("service_name", Text),
    Column("scope_name", Text),
    Column("dialect", String(32)),
    Column("operation", Text),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("agent_name", Text),
    Column("agent_id", Text),
    Column("agent_version", Text),
    Column("agent_version_hash", String(64)),
    Column("model", Text),
    Column("request_model", Text),
    Column("provider", Text),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cache_read_tokens", BigInteger),
    Column("cache_write_tokens", BigInteger),
    Column("reasoning_tokens", BigInteger),
    Column("cost_usd", Float),
    Column("cost_source", String(16)),
    Column("tool_name", Text),
    Column("tool_call_id", Text),
    Column("tool_arguments", Text),
    Column("tool_result", Text),
    Column("tool_calls", Text),  # JSON list of {id, name, arguments} an LLM span asked for
    Column("input_value", Text),
    Column("output_value", Text),
    Column("error_type", Text),
    Column("error_message", Text),
    Column("attributes", Text, nullable=False),  # JSON object, verbatim from the producer
    Column("resource", Text, nullable=False),  # JSON object
    Column("events", Text, nullable=False),  # JSON list
    Column("links", Text, nullable=False),  # JSON list
    Column("ingested_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("trace_id", "span_id", name="pk_spans"),
    # Only what the trace-list filters and duplicate handling use: each index costs a few
    # µs per ingested span (measured with benchmarks/ingest.py).
    Index("ix_spans_agent", "agent_name", "trace_id"),
    Index("ix_spans_model", "model", "trace_id"),
    Index("ix_spans_tool", "tool_name", "trace_id"),
    Index("ix_spans_ingested", "ingested_ns"),
)

# One row per trace, maintained at ingest so that lists and filters never aggregate spans.
traces = Table(
    "traces",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ns", BigInteger, nullable=False),
    Column("root_span_id", String(16)),
    Column("root_name", Text),
    Column("service_name", Text),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("agent_name", Text),
    Column("agent_version", Text),
    Column("span_count", Integer, nullable=False),
    Column("error_count", Integer, nullable=False),
    Column("llm_count", Integer, nullable=False),
    Column("tool_count", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Index("ix_traces_start", "start_ns"),
    Index("ix_traces_session", "session_id", "start_ns"),
    Index("ix_traces_agent", "agent_name", "start_ns"),
    Index("ix_traces_cost", "cost_usd"),
    Index("ix_traces_duration", "duration_ns"),
)
