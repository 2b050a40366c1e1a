"""alerts: alert instances, their events, silences; the deciding rule's kind on decisions

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("rule_kind", sa.String(32)))
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("group_key", sa.String(64), nullable=False),
        sa.Column("group", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("action", sa.Text),
        sa.Column("silenced_by", sa.String(32)),
        sa.Column("started_ns", sa.BigInteger, nullable=False),
        sa.Column("fired_ns", sa.BigInteger),
        sa.Column("resolved_ns", sa.BigInteger),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_alerts_status", "alerts", ["status", "updated_ns"])
    op.create_index("ix_alerts_rule", "alerts", ["rule_id", "group_key"])
    op.create_index("ix_alerts_started", "alerts", ["started_ns"])
    op.create_table(
        "alert_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_alert_events_alert", "alert_events", ["alert_id", "seq"])
    op.create_table(
        "silences",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("matchers", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
        sa.Column("revoked_ns", sa.BigInteger),
    )
    op.create_index("ix_silences_expires", "silences", ["expires_ns"])


def downgrade() -> None:
    op.drop_table("silences")
    op.drop_table("alert_events")
    op.drop_table("alerts")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("rule_kind")
