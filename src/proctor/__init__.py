"""Proctor: a self-hosted AgentOps control plane.

The SDK's public face::

    import proctor

    proctor.init()                                   # export to PROCTOR_URL, or the local store
    with proctor.session(agent="support", user="u-42"):
        ...                                          # every span inside carries the session

    @proctor.tool
    def lookup_customer(email: str) -> dict: ...     # recorded as an execute_tool span

    proctor.init(policy="policies/")                 # ...and checked by the guard before it runs
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
_SDK = ("check_input", "Draft", "flush", "guard", "init", "llm_call", "session", "shutdown", "tool", "use_guard")
_GUARD = ("ActionDenied", "ApprovalPending", "PolicyViolation", "SessionTerminated")
__all__ = [
    "ActionDenied",
    "ApprovalPending",
    "Draft",
    "PolicyViolation",
    "SessionTerminated",
    "__version__",
    "check_input",
    "flush",
    "guard",
    "init",
    "llm_call",
    "session",
    "shutdown",
    "tool",
    "use_guard",
]

if TYPE_CHECKING:
    from proctor.guard import ActionDenied, ApprovalPending, PolicyViolation, SessionTerminated
    from proctor.sdk import (
        Draft,
        check_input,
        flush,
        guard,
        init,
        llm_call,
        session,
        shutdown,
        tool,
        use_guard,
    )


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import proctor.core` (server, CLI) does not pay for the SDK.
    if name in _SDK:
        from proctor import sdk

        return getattr(sdk, name)
    if name in _GUARD:
        from proctor import guard

        return getattr(guard, name)
    raise AttributeError(f"module 'proctor' has no attribute {name!r}")
