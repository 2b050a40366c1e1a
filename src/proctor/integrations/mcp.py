"""The guard in the official MCP client: a ``ClientSession`` that asks before every ``tools/call``.

:class:`GuardedClientSession` is an ``mcp.ClientSession`` whose :meth:`~GuardedClientSession.call_tool`
consults the guard first. A refused call is never sent to the server: the caller gets a
``CallToolResult`` with ``isError`` set and the refusal as its text ("Refused by policy rule
refunds-large: Refunds above $50 need a human (approval id …)"), the shape an MCP host already
shows its model for a failed tool. An allowed call goes to the server; its result goes back
to the guard (budgets settled, content scanned, maybe redacted) before the caller sees it. A
terminated session raises :class:`~proctor.guard.SessionTerminated`.

Usage::

    from mcp import StdioServerParameters, stdio_client
    from proctor.integrations.mcp import GuardedClientSession

    params = StdioServerParameters(command="python", args=["-m", "mcp_server_time"])
    async with stdio_client(params) as (read, write):
        async with GuardedClientSession(read, write, guard=guard, session="sess-42", agent="ops") as mcp:
            await mcp.initialize()
            result = await mcp.call_tool("get_current_time", {"timezone": "UTC"})
            if result.is_error:                       # refused, or the tool failed
                print(result.content[0].text)

Every other argument is the ``ClientSession``'s. ``session=`` is a GuardSession, an id, a
callable taking this client session, or None for the current ``proctor.session(...)``.
``approval_wait_s`` waits (without blocking the event loop) for a human before answering that
an approval is pending.

Limitations: only ``tools/call`` is governed (not resources or prompts); a result the server
marks as an error reaches the guard as an error and is not scanned.
"""

from __future__ import annotations

from typing import Any

from mcp import ClientSession
from mcp.types import CallToolResult

from proctor.guard import Guard
from proctor.integrations._gate import SessionSource, ToolGate


def text_result(text: str, *, is_error: bool) -> CallToolResult:
    """A tool result with one text block, as the guard answers for a call it did not send."""
    return CallToolResult.model_validate({"content": [{"type": "text", "text": text}], "isError": is_error})


def _is_error(result: CallToolResult) -> bool:
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", False))


def _error_text(result: CallToolResult) -> str:
    return "\n".join(str(getattr(block, "text", "")) for block in result.content) or "tool error"


class GuardedClientSession(ClientSession):
    """An MCP client session with the guard in front of ``call_tool`` (see the module docs)."""

    def __init__(self, *args: Any, guard: Guard | None = None, session: SessionSource = None,
                 agent: str | None = None, environment: str | None = None, labels: dict[str, str] | None = None,
                 approval_wait_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = ToolGate(guard, session=session, agent=agent, environment=environment, labels=labels,
                             approval_wait_s=approval_wait_s)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                        *args: Any, **kwargs: Any) -> Any:
        """``ClientSession.call_tool``, asked of the guard first; a refusal comes back as an
        error result without reaching the server."""
        verdict = await self.gate.acheck(self.gate.session_for(self), name, dict(arguments or {}))
        if not verdict.runs or verdict.permit is None:
            return text_result(verdict.output or "", is_error=verdict.refused)
        permit = verdict.permit
        if permit.decision.effect == "redact":
            arguments = permit.args
        try:
            result = await super().call_tool(name, arguments, *args, **kwargs)
        except Exception as e:
            self.gate.finish(permit, None, error=e)
            raise
        if not isinstance(result, CallToolResult):  # an input-required or claimed result: not a tool output
            self.gate.finish(permit, None)
            return result
        if _is_error(result):
            self.gate.finish(permit, None, error=_error_text(result))
            return result
        # what the model will read: the content blocks and the structured content
        full = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        visible = {k: full[k] for k in ("content", "structuredContent") if k in full}
        outcome = self.gate.finish(permit, visible)
        if outcome.refusal is not None:
            return text_result(outcome.refusal, is_error=True)
        if outcome.value is not visible:  # redacted by a scanner rule
            return CallToolResult.model_validate({**full, **outcome.value})
        return result


__all__ = ["GuardedClientSession", "text_result"]
