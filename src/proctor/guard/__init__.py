"""Runtime governance (layer 3): the guard that decides before an action runs.

See :mod:`proctor.guard.guard` for the flow; :mod:`proctor.policy` for the rules it applies.
Names are imported on first use: the SDK's tool wrapper needs only the exceptions and the
event context, and must not pay for the policy engine, CEL and SQLAlchemy at import when no
policy is configured.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ActionDenied",
    "ApprovalHandle",
    "ApprovalPending",
    "Guard",
    "GuardSession",
    "Permit",
    "PolicyViolation",
    "SessionTerminated",
    "approval_digest",
]

_WHERE = {
    "ActionDenied": "errors",
    "ApprovalPending": "errors",
    "PolicyViolation": "errors",
    "SessionTerminated": "errors",
    "ApprovalHandle": "approvals",
    "approval_digest": "approvals",
    "Guard": "guard",
    "GuardSession": "guard",
    "Permit": "guard",
}

if TYPE_CHECKING:
    from proctor.guard.approvals import ApprovalHandle, approval_digest
    from proctor.guard.errors import ActionDenied, ApprovalPending, PolicyViolation, SessionTerminated
    from proctor.guard.guard import Guard, GuardSession, Permit


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'proctor.guard' has no attribute {name!r}")
    return getattr(importlib.import_module(f"proctor.guard.{module}"), name)
