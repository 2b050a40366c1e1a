"""governance state: budgets, approvals, kill switches, decision log

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "budget_counters",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("used", sa.Float, nullable=False),
        sa.Column("reserved", sa.Float, nullable=False),
        sa.Column("limit_value", sa.Float, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", "metric", name="pk_budget_counters"),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", "key", "metric", name="pk_budget_reservations"),
    )
    op.create_index("ix_budget_reservations_expires", "budget_reservations", ["expires_ns"])

    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("tool", sa.Text, nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("policy_hash", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("agent", sa.Text),
        sa.Column("rule_id", sa.Text),
        sa.Column("message", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
        sa.Column("decided_ns", sa.BigInteger),
        sa.Column("decided_by", sa.Text),
        sa.Column("decision_reason", sa.Text),
        sa.Column("consumed_ns", sa.BigInteger),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("span_id", sa.String(16)),
    )
    op.create_index("ix_approvals_digest", "approvals", ["digest"])
    op.create_index("ix_approvals_status", "approvals", ["status", "requested_ns"])
    op.create_index("ix_approvals_requested", "approvals", ["requested_ns"])

    op.create_table(
        "kill_switches",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
    )
    version = op.create_table(
        "kill_switch_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])

    op.create_table(
        "decisions",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("span_id", sa.String(16)),
        sa.Column("session_id", sa.Text),
        sa.Column("agent", sa.Text),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("effect", sa.String(32), nullable=False),
        sa.Column("enforced", sa.Boolean, nullable=False),
        sa.Column("rule_id", sa.Text),
        sa.Column("policy_hash", sa.Text),
        sa.Column("input_digest", sa.String(64)),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ux_decisions_decision_id", "decisions", ["decision_id"], unique=True)
    op.create_index("ix_decisions_session", "decisions", ["session_id", "seq"])
    op.create_index("ix_decisions_trace", "decisions", ["trace_id", "seq"])
    op.create_index("ix_decisions_effect", "decisions", ["effect", "seq"])
    head = op.create_table(
        "decision_chain_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    for table in ("decision_chain_head", "decisions", "kill_switch_version", "kill_switches", "approvals",
                  "budget_reservations", "budget_counters"):
        op.drop_table(table)
