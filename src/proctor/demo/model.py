"""A SIMULATED chat model: it follows a script instead of predicting tokens.

No LLM is called and nothing leaves the machine. Each call is recorded as an OTel GenAI
``chat <model>`` span, exactly as an instrumented client would record a real call: request and
response model, token usage (estimated from the message sizes, so it grows with the context),
prompt-cache reads, finish reasons, and the input and output messages in the current OTel GenAI
JSON format. Tool calls in the output carry ids that the agent passes to
``tool_fn.call_with_id(...)``, which joins each tool span to the call that asked for it.

Every span says it is simulated: ``proctor.simulated = true``. ``gen_ai.provider.name`` and
``gen_ai.request.model`` name a real provider and model only so that genai-prices can show
what the same tokens would cost there.

A script is a generator. It yields decisions (:func:`call`, :func:`parallel`, :func:`say`,
:func:`provider_error`) and receives what the model would see next: the tool results (a
:class:`ToolFailure` for a tool that raised), or the user's next message after a :func:`say`::

    def script():
        customer = yield call("lookup_customer", email="ana@example.com")
        yield say(f"Hello {customer['name']}")
"""

from __future__ import annotations

import math
import random
import string
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

SIMULATED_NOTE = "scripted fake model: no LLM was called; provider and model only name the price list"

# model id -> (provider whose prices apply, response model, tool call id style)
MODELS: dict[str, tuple[str, str, str]] = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18", "openai"),
    "claude-3-5-haiku": ("anthropic", "claude-3-5-haiku-20241022", "anthropic"),
}
_ID_CHARS = string.ascii_letters + string.digits
_CACHE_MIN_TOKENS = 1024  # both providers only cache prompt prefixes at least this long
_CACHE_BLOCK = 128


# -- decisions a script yields ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ToolRequest:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallTools:
    requests: tuple[ToolRequest, ...]
    thought: str | None = None  # text the model writes before its tool calls


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class ProviderError:
    """The (simulated) provider refuses the request, e.g. 429; the agent may retry."""

    status_code: int
    error_type: str
    message: str


Decision = CallTools | Say | ProviderError
Script = Generator[Decision, Any, None]


def call(name: str, thought: str | None = None, **arguments: Any) -> CallTools:
    """One tool call; the script receives its result (or a :class:`ToolFailure`)."""
    return CallTools((ToolRequest(name, arguments),), thought)


def parallel(*calls: CallTools, thought: str | None = None) -> CallTools:
    """Several tool calls in one response; the script receives a list of results, in order."""
    return CallTools(tuple(r for c in calls for r in c.requests), thought)


def say(text: str) -> Say:
    """The final answer of this turn; the script then receives the user's next message."""
    return Say(text)


def provider_error(status_code: int = 429, message: str = "Rate limit reached for requests") -> ProviderError:
    return ProviderError(status_code, "RateLimitError" if status_code == 429 else "APIStatusError", message)


@dataclass(frozen=True, slots=True)
class ToolFailure:
    """What a script receives for a tool call that raised, or that the guard refused.

    ``policy`` is set for a refusal: ``effect``, ``rule_id``, and for a call that needed a
    human, ``approval_id`` and ``approval_status`` (approved, denied, pending, expired).
    """

    error_type: str
    message: str
    retryable: bool = False
    policy: dict[str, Any] | None = None

    @property
    def refused_by(self) -> str | None:
        """The policy rule that refused the call, if the guard refused it."""
        return self.policy.get("rule_id") if self.policy else None


class SimulatedProviderError(Exception):
    def __init__(self, error: ProviderError) -> None:
        super().__init__(f"{error.status_code} {error.message} (simulated)")
        self.status_code = error.status_code
        self.retryable = error.status_code in (429, 500, 503, 529)


# -- what the model returns -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class Reply:
    message: dict[str, Any]  # the assistant message, OTel GenAI format
    tool_calls: list[ToolCall] = field(default_factory=list)
    text: str | None = None
    input_tokens: int = 0  # the usage the (simulated) provider reported
    output_tokens: int = 0


def text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def tool_response(call_id: str, response: Any) -> dict[str, Any]:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def failure_response(exc: BaseException, *, message: str | None = None,
                     policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tool error as the model sees it in the next request (with the policy verdict, for a refusal)."""
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc) if message is None else message,
                             "retryable": bool(getattr(exc, "retryable", False))}
    if policy is not None:
        error["policy"] = policy
    return {"error": error}


def _tokens(value: Any) -> int:
    # ~4 characters per token for English and JSON: close enough for plausible usage numbers
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return math.ceil(len(text) / 4)


class ScriptedModel:
    """A fake chat model for one conversation: it follows ``script`` and records a span per call.

    SIMULATED: the decisions come from the script; token counts are estimated from the size of
    the messages; the latency is a short sleep.
    """

    def __init__(self, model: str, script: Script, rng: random.Random, *, max_tokens: int = 1024,
                 temperature: float = 0.2, tracer: trace.Tracer | None = None, latency: bool = True) -> None:
        self.model = model
        self.tracer = tracer or trace.get_tracer("proctor.demo")
        self.latency = latency
        self.provider, self.response_model, self._id_style = MODELS[model]
        self.script = script
        self.rng = rng
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._started = False
        self._after_error = False
        self._cached_prefix = 0  # tokens of the longest prompt sent so far in this conversation

    # -- ids -----------------------------------------------------------------------------
    def _rand(self, n: int) -> str:
        return "".join(self.rng.choice(_ID_CHARS) for _ in range(n))

    def _call_id(self) -> str:
        return f"toolu_01{self._rand(22)}" if self._id_style == "anthropic" else f"call_{self._rand(24)}"

    def _response_id(self) -> str:
        return f"msg_01{self._rand(22)}" if self._id_style == "anthropic" else f"chatcmpl-{self._rand(29)}"

    # -- the script ----------------------------------------------------------------------
    def _observation(self, messages: list[dict[str, Any]]) -> Any:
        """What the script gets to see: the tool results or the user's text in the last message."""
        last = messages[-1]
        if last["role"] == "user":
            return "".join(p.get("content", "") for p in last["parts"] if p["type"] == "text")
        results = []
        for part in last["parts"]:
            if part["type"] != "tool_call_response":
                continue
            resp = part["response"]
            if isinstance(resp, dict) and set(resp) == {"error"}:
                err = resp["error"]
                results.append(ToolFailure(err["type"], err["message"], err["retryable"], err.get("policy")))
            else:
                results.append(resp)
        return results[0] if len(results) == 1 else results

    def _decide(self, messages: list[dict[str, Any]]) -> Decision:
        try:
            if not self._started:
                self._started = True
                return next(self.script)
            if self._after_error:  # the same request again: the script already moved on
                self._after_error = False
                return next(self.script)
            return self.script.send(self._observation(messages))
        except StopIteration:
            raise RuntimeError("the demo script ended before the conversation did") from None

    # -- one call ------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, Any]], *, system: str, tools: list[dict[str, Any]]) -> Reply:
        """One simulated chat completion, recorded as a ``chat <model>`` span."""
        decision = self._decide(messages)
        input_tokens = _tokens(system) + _tokens(tools) + sum(_tokens(m) + 4 for m in messages)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": self.max_tokens,
            "gen_ai.request.temperature": self.temperature,
            "gen_ai.system_instructions": orjson.dumps([{"type": "text", "content": system}]).decode(),
            "gen_ai.input.messages": orjson.dumps(messages).decode(),
            "gen_ai.tool.definitions": orjson.dumps(tools).decode(),
            "proctor.simulated": True,
            "proctor.simulated.note": SIMULATED_NOTE,
        }
        with self.tracer.start_as_current_span(
            f"chat {self.model}", kind=SpanKind.CLIENT, attributes=attrs,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            if isinstance(decision, ProviderError):
                self._sleep(self.rng.uniform(0.002, 0.006))
                self._after_error = True
                exc = SimulatedProviderError(decision)
                span.record_exception(exc)
                span.set_attribute("error.type", decision.error_type)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise exc
            reply = self._reply(decision)
            output_tokens = max(1, _tokens(reply.message["parts"]) + self.rng.randint(2, 12))
            cache_read = self._cache_read(input_tokens)
            # a real model takes time to first token plus time per generated token
            self._sleep(min(0.05, self.rng.uniform(0.003, 0.008) + output_tokens * 0.00012))
            finish = reply.message["finish_reason"]
            span.set_attributes({
                "gen_ai.response.id": self._response_id(),
                "gen_ai.response.model": self.response_model,
                "gen_ai.response.finish_reasons": [finish],
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "gen_ai.output.messages": orjson.dumps([reply.message]).decode(),
            })
            if cache_read:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", cache_read)
        reply.input_tokens, reply.output_tokens = input_tokens, output_tokens
        return reply

    def _sleep(self, seconds: float) -> None:
        if self.latency:  # the random draw happens either way, so the script stays the same
            time.sleep(seconds)

    def _reply(self, decision: CallTools | Say) -> Reply:
        if isinstance(decision, Say):
            msg = {"role": "assistant", "parts": [{"type": "text", "content": decision.text}], "finish_reason": "stop"}
            return Reply(msg, text=decision.text)
        calls = [ToolCall(self._call_id(), r.name, r.arguments) for r in decision.requests]
        parts: list[dict[str, Any]] = [{"type": "text", "content": decision.thought}] if decision.thought else []
        parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]
        return Reply({"role": "assistant", "parts": parts, "finish_reason": "tool_call"}, tool_calls=calls)

    def _cache_read(self, input_tokens: int) -> int:
        """Prompt-cache hit on the prefix sent before, as providers report it (whole blocks)."""
        cached = 0
        if self._cached_prefix >= _CACHE_MIN_TOKENS and self.rng.random() < 0.85:  # evictions happen
            cached = min(self._cached_prefix, input_tokens) // _CACHE_BLOCK * _CACHE_BLOCK
        self._cached_prefix = max(self._cached_prefix, input_tokens)
        return cached
