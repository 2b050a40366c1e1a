"""What an agent sees when the guard stops an action.

Every exception carries the :class:`~proctor.policy.model.Decision` that caused it, so an
agent framework can turn it into a tool error message the model reads ("refused by
refund-limit: Refunds above $50 need a human") instead of crashing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proctor.policy.model import Decision

if TYPE_CHECKING:
    from proctor.guard.approvals import ApprovalHandle


class PolicyViolation(Exception):
    """Base class: an action was not allowed to run as asked."""

    def __init__(self, decision: Decision, text: str | None = None) -> None:
        self.decision = decision
        target = decision.target or decision.stage
        super().__init__(text or f"{target}: {decision.effect} by {decision.rule_id or 'default'}"
                         + (f" — {decision.message}" if decision.message else ""))


class ActionDenied(PolicyViolation):
    """The action was denied (a rule, a default, a kill switch, a budget, or a refused approval)."""


class SessionTerminated(PolicyViolation):
    """The session was ended (loop breaker, kill switch, terminate_session rule); every later
    action in it is refused too."""


class ApprovalPending(PolicyViolation):
    """The action needs a human. ``approval`` is a handle to wait on, or to resume with later."""

    def __init__(self, decision: Decision, approval: ApprovalHandle) -> None:
        self.approval = approval
        super().__init__(decision, f"{decision.target}: waiting for approval {approval.id}"
                         + (f" — {decision.message}" if decision.message else ""))
