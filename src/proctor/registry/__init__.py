"""The agent registry (layer 3): content-hashed agent versions, environments, gated promotion,
rollback, semantic diffs and the inventory. See docs/registry.md.

- :mod:`proctor.registry.manifest` — ``agent.yaml`` → a resolved, hashed version;
- :mod:`proctor.registry.service` — push, sync, deploy through gates, rollback, diff;
- :mod:`proctor.registry.diff` — what changed between two versions, classified;
- :mod:`proctor.registry.schemas` — tool output schemas observed in traces, and their drift.
"""
