"""One module per console page group; each exposes ``router``."""

from proctor.ui.pages import (
    agents,
    alerts,
    approvals,
    audit,
    killswitches,
    overview,
    policies,
    sessions,
    traces,
)

ROUTERS = [m.router for m in (overview, traces, sessions, agents, policies, approvals, alerts, killswitches, audit)]
