"""Framework adapters (layer 4): the guard where each agent framework runs tools and models.

One module per framework; import the one you use (each imports its framework):

- :mod:`proctor.integrations.openai_agents` — OpenAI Agents SDK (tool guardrails, approvals)
- :mod:`proctor.integrations.langchain` — LangChain agents middleware and LangGraph ToolNode
- :mod:`proctor.integrations.pydantic_ai` — pydantic-ai toolsets and capabilities
- :mod:`proctor.integrations.mcp` — the official MCP client session

Every adapter turns a refused call into a tool error the model reads ("Refused by policy rule
refunds-large: Refunds above $50 need a human (approval id …)") instead of crashing the run; a
terminated session stops the run with :class:`proctor.guard.SessionTerminated`.
"""

from proctor.integrations._gate import NoSessionError, SessionSource, ToolGate, Verdict, refusal_text

__all__ = ["NoSessionError", "SessionSource", "ToolGate", "Verdict", "refusal_text"]
