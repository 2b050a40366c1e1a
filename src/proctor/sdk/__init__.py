"""Layer 4: the in-process SDK: ``init``, ``session``, ``tool``."""

from proctor.sdk.context import SessionInfo, current_session, session
from proctor.sdk.setup import flush, init, shutdown, status
from proctor.sdk.tools import tool

__all__ = ["SessionInfo", "current_session", "flush", "init", "session", "shutdown", "status", "tool"]
