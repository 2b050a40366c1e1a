"""agent registry: versions, their tools, environments, deployments

Revision ID: 0003
Revises: 0002
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_versions",
        sa.Column("version_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("owner", sa.Text),
        sa.Column("model_provider", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("policy_name", sa.Text),
        sa.Column("policy_hash", sa.String(64)),
        sa.Column("tier", sa.String(32)),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text),
    )
    op.create_index("ix_agent_versions_name", "agent_versions", ["name", "created_ns"])
    op.create_index("ix_agent_versions_model", "agent_versions", ["model_id"])
    op.create_index("ix_agent_versions_policy", "agent_versions", ["policy_hash"])
    op.create_table(
        "agent_version_tools",
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("tool_name", sa.Text, nullable=False),
        sa.Column("side_effect", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "tool_name", name="pk_agent_version_tools"),
    )
    op.create_index("ix_agent_version_tools_tool", "agent_version_tools", ["tool_name"])
    envs = op.create_table(
        "environments",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    now = time.time_ns()
    op.bulk_insert(envs, [
        {"name": "dev", "description": "development", "created_ns": now},
        {"name": "staging", "description": "pre-production", "created_ns": now},
        {"name": "prod", "description": "production", "created_ns": now},
    ])
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("previous_version_id", sa.String(64)),
        sa.Column("by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("gates", sa.Text, nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ux_deployments_agent_env_seq", "deployments", ["agent", "environment", "seq"], unique=True)
    op.create_index("ix_deployments_version", "deployments", ["version_id"])
    op.create_index("ix_deployments_ts", "deployments", ["ts_ns"])
    op.create_table(
        "deployment_heads",
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("version_id", sa.String(64)),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("agent", "environment", name="pk_deployment_heads"),
    )


def downgrade() -> None:
    for table in ("deployment_heads", "deployments", "environments", "agent_version_tools", "agent_versions"):
        op.drop_table(table)
