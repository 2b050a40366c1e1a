"""Layer 4: the in-process SDK: ``init``, ``session``, ``tool``, and the guard's checks."""

from proctor.sdk.context import SessionInfo, current_session, session
from proctor.sdk.governance import Draft, LlmCall, check_input, guard, llm_call, use_guard
from proctor.sdk.setup import flush, init, shutdown, status
from proctor.sdk.tools import tool

__all__ = [
    "Draft",
    "LlmCall",
    "SessionInfo",
    "check_input",
    "current_session",
    "flush",
    "guard",
    "init",
    "llm_call",
    "session",
    "shutdown",
    "status",
    "tool",
    "use_guard",
]
