"""One module per console page group; each exposes ``router``."""

from proctor.ui.pages import (
    agents,
    alerts,
    approvals,
    audit,
    killswitches,
    login,
    overview,
    policies,
    reference,
    sessions,
    trace_detail,
    traces,
)

ROUTERS = [m.router for m in (overview, traces, trace_detail, sessions, agents, policies, approvals, alerts,
                              killswitches, audit, login, reference)]
