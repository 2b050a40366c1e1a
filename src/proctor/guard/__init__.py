"""Runtime governance (layer 3): the guard that decides before an action runs.

See :mod:`proctor.guard.guard` for the flow; :mod:`proctor.policy` for the rules it applies.
"""

from proctor.guard.approvals import ApprovalHandle, approval_digest
from proctor.guard.errors import ActionDenied, ApprovalPending, PolicyViolation, SessionTerminated
from proctor.guard.guard import Guard, GuardSession, Permit

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
