"""The guard in the official MCP client, against real MCP servers over stdio.

The main server is a small ``MCPServer`` (the SDK's FastMCP) written by the test: each tool
appends a line to a journal file when it really runs, so a spec can prove that a refused call
never reached the server. One spec also talks to ``mcp-server-time`` from PyPI.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from proctor.guard import Guard, SessionTerminated
from proctor.integrations.mcp import GuardedClientSession

from .support import DENIAL_TEXT, approval_id_in

SESSION = "mcp-1"

SERVER = '''
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

journal = Path(sys.argv[1])
server = MCPServer("proctor-adapter-test")


def ran(line: str) -> None:
    with journal.open("a") as f:
        f.write(line + "\\n")


@server.tool()
def get_weather(city: str) -> str:
    """Weather for a city."""
    ran(f"get_weather {city}")
    return f"Sunny in {city}"


@server.tool()
def delete_db(name: str) -> str:
    """Drop a database."""
    ran(f"delete_db {name}")
    return f"dropped {name}"


@server.tool()
def refund(order: str, amount_usd: float) -> str:
    """Refund an order."""
    ran(f"refund {order} {amount_usd}")
    return f"refunded {amount_usd} on {order}"


@server.tool()
def exfiltrate(data: str) -> str:
    """Send data somewhere."""
    ran(f"exfiltrate {data}")
    return "sent"


@server.tool()
def read_config(name: str) -> str:
    """A config file, credentials and all."""
    ran(f"read_config {name}")
    return "region = eu-west-1\\naws_access_key_id = AKIAIOSFODNN7EXAMPLE"


if __name__ == "__main__":
    server.run()
'''


class Server:
    """The test MCP server's launch parameters and the journal of calls that reached it."""

    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        self.journal = tmp_path / "journal.txt"
        self.journal.touch()
        self.params = StdioServerParameters(command=sys.executable, args=[str(script), str(self.journal)])

    def ran(self) -> list[str]:
        return self.journal.read_text().splitlines()


def connect(params: StdioServerParameters, guard: Guard, body: Callable[[GuardedClientSession], Awaitable[Any]],
            **kwargs: Any) -> Any:
    """Start the server, open a guarded session on it, run ``body``, shut down. Bounded in time."""

    async def main() -> Any:
        async with stdio_client(params) as (read, write), \
                GuardedClientSession(read, write, guard=guard, **{"session": SESSION, **kwargs}) as mcp:
            await mcp.initialize()
            return await body(mcp)

    return asyncio.run(asyncio.wait_for(main(), timeout=30))


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_an_allowed_call_reaches_the_server_and_returns_its_result(server: Server, guard: Guard,
                                                                   decisions: Any) -> None:
    result = connect(server.params, guard, lambda mcp: mcp.call_tool("get_weather", {"city": "Paris"}),
                     agent="ops")

    assert not result.is_error
    assert text_of(result) == "Sunny in Paris"
    assert server.ran() == ["get_weather Paris"]
    [row] = decisions("get_weather")
    assert (row["effect"], row["session_id"], row["agent"]) == ("allow", SESSION, "ops")


def test_a_denied_call_never_reaches_the_server(server: Server, guard: Guard, decisions: Any) -> None:
    result = connect(server.params, guard, lambda mcp: mcp.call_tool("delete_db", {"name": "prod"}))

    assert result.is_error
    assert text_of(result).startswith(DENIAL_TEXT)
    assert server.ran() == []
    assert [r["effect"] for r in decisions("delete_db")] == ["deny"]


def test_require_approval_then_the_same_call_goes_through(server: Server, guard: Guard, decisions: Any) -> None:
    args = {"order": "o-7", "amount_usd": 80}

    async def body(mcp: GuardedClientSession) -> tuple[CallToolResult, CallToolResult]:
        held = await mcp.call_tool("refund", args)
        approval_id = approval_id_in(text_of(held))
        assert guard.approvals.get(approval_id).status == "pending"
        assert server.ran() == []
        guard.approvals.decide(approval_id, approved=True, by="alice", reason="ok")
        return held, await mcp.call_tool("refund", args)

    held, released = connect(server.params, guard, body)

    assert held.is_error and not released.is_error
    assert text_of(released) == "refunded 80.0 on o-7"
    assert server.ran() == ["refund o-7 80.0"]
    approval_id = approval_id_in(text_of(held))
    assert guard.approvals.get(approval_id).status == "consumed"
    assert [(r["effect"], r["rule_id"]) for r in decisions("refund")] == [
        ("require_approval", "refunds-large"), ("allow", f"approval:{approval_id}")]


def test_a_terminated_session_raises_and_sends_nothing_more(server: Server, guard: Guard) -> None:
    async def body(mcp: GuardedClientSession) -> None:
        with pytest.raises(SessionTerminated, match="Exfiltration attempt"):
            await mcp.call_tool("exfiltrate", {"data": "secrets"})
        with pytest.raises(SessionTerminated):  # the session stays ended, even for reads
            await mcp.call_tool("get_weather", {"city": "Rome"})

    connect(server.params, guard, body)
    assert server.ran() == []


def test_secrets_in_a_server_result_are_redacted_before_the_caller_sees_them(server: Server, guard: Guard,
                                                                             decisions: Any) -> None:
    result = connect(server.params, guard, lambda mcp: mcp.call_tool("read_config", {"name": "prod"}))

    assert server.ran() == ["read_config prod"]
    assert "AKIAIOSFODNN7EXAMPLE" not in text_of(result)
    assert "region = eu-west-1" in text_of(result)
    assert [(r["action"], r["effect"]) for r in decisions("read_config")] == [
        ("tool_call", "allow"), ("tool_result", "redact")]


def test_a_server_from_pypi_mcp_server_time(guard: Guard, decisions: Any) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone", "UTC"])

    async def body(mcp: GuardedClientSession) -> tuple[CallToolResult, CallToolResult]:
        tools = {t.name for t in (await mcp.list_tools()).tools}
        assert {"get_current_time", "convert_time"} <= tools
        allowed = await mcp.call_tool("get_current_time", {"timezone": "Europe/Paris"})
        # convert_time is not in the catalogue: it counts as a write, and writes are denied
        refused = await mcp.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                       "target_timezone": "Asia/Tokyo"})
        return allowed, refused

    allowed, refused = connect(params, guard, body)

    assert not allowed.is_error and "Europe/Paris" in text_of(allowed)
    assert refused.is_error
    assert text_of(refused) == "Refused by policy: default effect for write tools"
    assert [(r["target"], r["effect"]) for r in decisions(session_id=SESSION)] == [
        ("get_current_time", "allow"), ("convert_time", "deny")]
