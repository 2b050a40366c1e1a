"""spans and traces

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("otel_kind", sa.String(16)),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ns", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("service_name", sa.Text),
        sa.Column("scope_name", sa.Text),
        sa.Column("dialect", sa.String(32)),
        sa.Column("operation", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("agent_name", sa.Text),
        sa.Column("agent_id", sa.Text),
        sa.Column("agent_version", sa.Text),
        sa.Column("agent_version_hash", sa.String(64)),
        sa.Column("model", sa.Text),
        sa.Column("request_model", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("cache_read_tokens", sa.BigInteger),
        sa.Column("cache_write_tokens", sa.BigInteger),
        sa.Column("reasoning_tokens", sa.BigInteger),
        sa.Column("cost_usd", sa.Float),
        sa.Column("cost_source", sa.String(16)),
        sa.Column("tool_name", sa.Text),
        sa.Column("tool_call_id", sa.Text),
        sa.Column("tool_arguments", sa.Text),
        sa.Column("tool_result", sa.Text),
        sa.Column("tool_calls", sa.Text),
        sa.Column("input_value", sa.Text),
        sa.Column("output_value", sa.Text),
        sa.Column("error_type", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("links", sa.Text, nullable=False),
        sa.Column("ingested_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("trace_id", "span_id", name="pk_spans"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # lz4 instead of pglz for the large text columns: PostgreSQL spends most of its CPU per
        # ingested span compressing them (measured with benchmarks/ingest.py).
        lz4 = bind.exec_driver_sql(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).scalar()
        if lz4:
            for col in ("attributes", "resource", "events", "input_value", "output_value", "tool_arguments",
                        "tool_result"):
                op.execute(f"ALTER TABLE spans ALTER COLUMN {col} SET COMPRESSION lz4")
    op.create_index("ix_spans_agent", "spans", ["agent_name", "trace_id"])
    op.create_index("ix_spans_model", "spans", ["model", "trace_id"])
    op.create_index("ix_spans_tool", "spans", ["tool_name", "trace_id"])
    op.create_index("ix_spans_ingested", "spans", ["ingested_ns"])

    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ns", sa.BigInteger, nullable=False),
        sa.Column("root_span_id", sa.String(16)),
        sa.Column("root_name", sa.Text),
        sa.Column("service_name", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("agent_name", sa.Text),
        sa.Column("agent_version", sa.Text),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("llm_count", sa.Integer, nullable=False),
        sa.Column("tool_count", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_traces_start", "traces", ["start_ns"])
    op.create_index("ix_traces_session", "traces", ["session_id", "start_ns"])
    op.create_index("ix_traces_agent", "traces", ["agent_name", "start_ns"])
    op.create_index("ix_traces_cost", "traces", ["cost_usd"])
    op.create_index("ix_traces_duration", "traces", ["duration_ns"])


def downgrade() -> None:
    op.drop_table("traces")
    op.drop_table("spans")
