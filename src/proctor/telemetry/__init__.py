"""Layer 3: live telemetry — Prometheus metrics, streaming alert rules, notifiers, containment."""
