"""The relational schema, as SQLAlchemy Core tables.

This module is the single description of the live schema; Alembic migrations in
``store/migrations`` create it step by step and a test checks the two agree on SQLite and
PostgreSQL. JSON documents are stored as text on both engines: the hot path writes them
already serialized (orjson), and text keeps SQLite and PostgreSQL byte-identical.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
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

# --- Governance state (the runtime guard's layer 2) -------------------------------------------
# Everything below is shared by every guard process and the server: budgets are counters that
# several processes spend from at once, approvals and kill switches are decided by a human in
# the console and read by the guards, and the decision log is the tamper-evident audit trail.

# One row per (budget key, metric). ``used`` is what was really spent; ``reserved`` is what
# in-flight calls have claimed and not settled yet. A reservation is granted only while
# used + reserved + amount <= limit_value, so concurrent sessions cannot overshoot together.
budget_counters = Table(
    "budget_counters",
    metadata,
    Column("key", Text, nullable=False),  # "session:abc", "agent_day:triage:2026-11-22", ...
    Column("metric", String(32), nullable=False),  # "usd", "tokens", "tool_calls", "wall_s"
    Column("used", Float, nullable=False),
    Column("reserved", Float, nullable=False),
    Column("limit_value", Float, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("key", "metric", name="pk_budget_counters"),
)

# The parts of each open reservation, so that settling is idempotent and a crashed process's
# claim can be given back once it expires.
budget_reservations = Table(
    "budget_reservations",
    metadata,
    Column("id", String(32), nullable=False),
    Column("key", Text, nullable=False),
    Column("metric", String(32), nullable=False),
    Column("amount", Float, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("id", "key", "metric", name="pk_budget_reservations"),
    Index("ix_budget_reservations_expires", "expires_ns"),
)

# Human approvals of held tool calls, bound to a digest of (tool, canonical arguments, policy
# hash, session): an approval can only ever release the exact call it was asked for.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("tool", Text, nullable=False),
    Column("arguments", Text, nullable=False),  # JSON object
    Column("policy_hash", Text),
    Column("session_id", Text),
    Column("agent", Text),
    Column("rule_id", Text),
    Column("message", Text),
    Column("status", String(16), nullable=False),  # pending|approved|denied|expired|consumed
    Column("requested_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    Column("decided_ns", BigInteger),
    Column("decided_by", Text),
    Column("decision_reason", Text),
    Column("consumed_ns", BigInteger),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Index("ix_approvals_digest", "digest"),
    Index("ix_approvals_status", "status", "requested_ns"),
    Index("ix_approvals_requested", "requested_ns"),
)

kill_switches = Table(
    "kill_switches",
    metadata,
    Column("scope", Text, primary_key=True),  # global | agent:<n> | session:<id> | writes_off[:agent:<n>]
    Column("active", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("set_by", Text, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

# A single row (id = 1) bumped by every kill-switch change: guards poll this one integer
# instead of the whole table.
kill_switch_version = Table(
    "kill_switch_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

# Append-only, hash-chained: hash = sha256(prev_hash + canonical JSON of the row's content).
decisions = Table(
    "decisions",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("decision_id", String(64), nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Column("session_id", Text),
    Column("agent", Text),
    Column("action", String(32), nullable=False),  # tool | llm | llm_output | tool_result | input ...
    Column("target", Text),  # tool name or model
    Column("effect", String(32), nullable=False),
    Column("enforced", Boolean, nullable=False),  # False: shadow mode, logged but not applied
    Column("rule_id", Text),
    Column("policy_hash", Text),
    Column("input_digest", String(64)),
    Column("reasons", Text, nullable=False),  # JSON list of strings
    # the deciding rule's kind (tool, loop, scanner, budget, ...); added by 0004, hashed only when set
    Column("rule_kind", String(32)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ux_decisions_decision_id", "decision_id", unique=True),
    Index("ix_decisions_session", "session_id", "seq"),
    Index("ix_decisions_trace", "trace_id", "seq"),
    Index("ix_decisions_effect", "effect", "seq"),
)

# A single row (id = 1): the last seq and hash. Appenders lock it, which serializes them, and
# verification compares it with the last row so a deleted tail is detected.
decision_chain_head = Table(
    "decision_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# --- the agent registry (issue 4) ---------------------------------------------------------------

# Immutable: a row per content hash. The resolved manifest (prompts, schemas, policy included)
# is stored whole; the other columns are copies for filtering (inventory, blast radius).
agent_versions = Table(
    "agent_versions",
    metadata,
    Column("version_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("label", Text),
    Column("owner", Text),
    Column("model_provider", Text),
    Column("model_id", Text),
    Column("policy_name", Text),
    Column("policy_hash", String(64)),
    Column("tier", String(32)),
    Column("labels", Text, nullable=False),  # JSON object
    Column("manifest", Text, nullable=False),  # JSON: the resolved manifest
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", Text),
    Index("ix_agent_versions_name", "name", "created_ns"),
    Index("ix_agent_versions_model", "model_id"),
    Index("ix_agent_versions_policy", "policy_hash"),
)

# The tools each version may call: "which prod agents can call billing.refund?"
agent_version_tools = Table(
    "agent_version_tools",
    metadata,
    Column("version_id", String(64), nullable=False),
    Column("tool_name", Text, nullable=False),
    Column("side_effect", String(16), nullable=False),
    PrimaryKeyConstraint("version_id", "tool_name", name="pk_agent_version_tools"),
    Index("ix_agent_version_tools_tool", "tool_name"),
)

environments = Table(
    "environments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text),
    Column("created_ns", BigInteger, nullable=False),
)

# Append-only history of pointer moves, refused ones included. seq counts per (agent, environment).
deployments = Table(
    "deployments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent", Text, nullable=False),
    Column("environment", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),  # deploy | rollback
    Column("status", String(16), nullable=False),  # applied | refused
    Column("version_id", String(64), nullable=False),
    Column("previous_version_id", String(64)),
    Column("by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON list of links or notes
    Column("gates", Text, nullable=False),  # JSON: each gate's result
    Column("ts_ns", BigInteger, nullable=False),
    Index("ux_deployments_agent_env_seq", "agent", "environment", "seq", unique=True),
    Index("ix_deployments_version", "version_id"),
    Index("ix_deployments_ts", "ts_ns"),
)

# The current pointer per (agent, environment); movers lock the row, which serializes them.
deployment_heads = Table(
    "deployment_heads",
    metadata,
    Column("agent", Text, nullable=False),
    Column("environment", String(64), nullable=False),
    Column("version_id", String(64)),
    Column("seq", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("agent", "environment", name="pk_deployment_heads"),
)


# --- alerts (issue 5) ---------------------------------------------------------------------------

# One row per alert instance: a rule's condition holding for one group (agent, session, tool...)
# from pending through firing to resolved. The engine keeps at most one open (pending or firing)
# alert per (rule_id, group_key).
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("rule_id", Text, nullable=False),
    Column("group_key", String(64), nullable=False),  # sha256 of the rule id and the group
    Column("group", Text, nullable=False),  # JSON object: the group-by fields and their values
    Column("status", String(16), nullable=False),  # pending | firing | resolved
    Column("severity", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("value", Float),
    Column("labels", Text, nullable=False),  # JSON object
    Column("evidence", Text, nullable=False),  # JSON: trace_ids, span_ids, decision_ids (bounded)
    Column("action", Text),  # the containment taken, if any
    Column("silenced_by", String(32)),  # the silence that muted its notifications
    Column("started_ns", BigInteger, nullable=False),
    Column("fired_ns", BigInteger),
    Column("resolved_ns", BigInteger),
    Column("updated_ns", BigInteger, nullable=False),
    Index("ix_alerts_status", "status", "updated_ns"),
    Index("ix_alerts_rule", "rule_id", "group_key"),
    Index("ix_alerts_started", "started_ns"),
)

# Append-only: every transition, notification attempt, containment action and silencing.
alert_events = Table(
    "alert_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(32), nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),  # pending | firing | resolved | notified | notify_failed | action
    Column("detail", Text, nullable=False),  # JSON object
    Index("ix_alert_events_alert", "alert_id", "seq"),
)

# Silences mute notifications of matching alerts until they expire (alerts are still recorded).
silences = Table(
    "silences",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("matchers", Text, nullable=False),  # JSON object: rule (glob) and group fields (exact)
    Column("comment", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    Column("revoked_ns", BigInteger),
    Index("ix_silences_expires", "expires_ns"),
)


# --- server auth (issue 6) ----------------------------------------------------------------------

# API keys: only the SHA-256 of each secret is kept. Never deleted: a revoked key keeps its row
# (who had access, and until when) and frees its name for a new key.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # the <id> in the secret pk_<id>_<random>
    Column("name", String(64), nullable=False),  # recorded as who acted (e.g. the approver)
    Column("role", String(16), nullable=False),  # viewer | operator | approver | admin
    Column("key_hash", String(64), nullable=False),  # sha256 hex of the whole secret
    Column("prefix", String(32), nullable=False),  # the secret's first characters, for display
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", Text),
    Column("revoked_ns", BigInteger),
    Column("last_used_ns", BigInteger),  # updated at most once a minute per key and server
    # a name belongs to one active key at a time (partial index: revoked keys keep their names)
    Index("ux_api_keys_active_name", "name", unique=True, sqlite_where=text("revoked_ns IS NULL"),
          postgresql_where=text("revoked_ns IS NULL")),
)

# The console's logins: the browser's cookie holds a random token of its own, never the API key
# (cookies reach every port of a host). A login lasts while its key does, until it expires or
# the browser logs out.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex of the cookie's token
    Column("key_id", String(32), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    Index("ix_console_sessions_key", "key_id"),
)
