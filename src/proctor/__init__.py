"""Proctor: a self-hosted AgentOps control plane.

The SDK's public face::

    import proctor

    proctor.init()                                   # export to PROCTOR_URL, or the local store
    with proctor.session(agent="support", user="u-42"):
        ...                                          # every span inside carries the session

    @proctor.tool
    def lookup_customer(email: str) -> dict: ...     # recorded as an execute_tool span
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "flush", "init", "session", "shutdown", "tool"]

if TYPE_CHECKING:
    from proctor.sdk import flush, init, session, shutdown, tool


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import proctor.core` (server, CLI) does not pay for the SDK.
    if name in ("flush", "init", "session", "shutdown", "tool"):
        from proctor import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'proctor' has no attribute {name!r}")
