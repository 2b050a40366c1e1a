"""Deterministic fake of the OpenAI Chat Completions API for conformance runs.

The script is fixed so every instrumentation dialect sees the same agent turn:

* last message from the user and tools offered -> one ``get_weather`` tool call;
* last message is a tool result (or anything else) -> the final text answer.

Only ``127.0.0.1`` is ever bound. Each response is written with a single ``write`` on a
``TCP_NODELAY`` socket: a fully buffered body avoids Nagle/delayed-ACK stalls that would
otherwise add ~40 ms per request on loopback. Streaming responses are therefore sent
as one complete SSE body, which OpenAI clients parse exactly like a trickled stream.

Run standalone with ``python fake_openai.py [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

S = TypeVar("S", bound=ThreadingHTTPServer)

TOOL_CALL_ID = "call_weather_1"
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris"}'
FINAL_TEXT = "It is sunny in Paris."
# A request whose model starts with this prefix gets an OpenAI-style 400 error, so emitters can
# exercise the error path without a second server.
FAIL_MODEL_PREFIX = "fail"
CREATED = 1_700_000_000
SYSTEM_FINGERPRINT = "fp_conformance"

USAGE: dict[str, Any] = {
    "prompt_tokens": 42,
    "completion_tokens": 17,
    "total_tokens": 59,
    # cache_write_tokens is not in the brief's script but newer openai SDKs model it and several
    # instrumentations map it, so it reveals where each dialect puts cache-write counts.
    "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 5, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 3,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})


def _wants_tool_call(request: dict[str, Any]) -> bool:
    messages = request.get("messages") or []
    if not messages or not request.get("tools"):
        return False
    return bool(messages[-1].get("role") == "user")


def _tool_call(arguments: str) -> dict[str, Any]:
    return {
        "id": TOOL_CALL_ID,
        "type": "function",
        "function": {"name": TOOL_NAME, "arguments": arguments},
    }


def chat_completion(request: dict[str, Any]) -> dict[str, Any]:
    """Build the non-streamed ``chat.completion`` object for ``request``."""
    model = str(request.get("model") or "gpt-4o-mini")
    if _wants_tool_call(request):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [_tool_call(TOOL_ARGUMENTS)],
        }
        finish_reason, completion_id = "tool_calls", "chatcmpl-conformance-tool"
    else:
        message = {"role": "assistant", "content": FINAL_TEXT, "refusal": None}
        finish_reason, completion_id = "stop", "chatcmpl-conformance-text"
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": USAGE,
    }


def chat_completion_chunks(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Build the ``chat.completion.chunk`` sequence a streamed request receives."""
    model = str(request.get("model") or "gpt-4o-mini")
    tool_turn = _wants_tool_call(request)
    completion_id = "chatcmpl-conformance-tool" if tool_turn else "chatcmpl-conformance-text"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    if tool_turn:
        # Split the arguments across deltas, as the real API does, so accumulation code is exercised.
        half = len(TOOL_ARGUMENTS) // 2
        first = {"index": 0, **_tool_call("")}
        chunks = [
            chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": TOOL_ARGUMENTS[:half]}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": TOOL_ARGUMENTS[half:]}}]}),
            chunk({}, "tool_calls"),
        ]
    else:
        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in ("It is sunny", " in Paris.")]
        chunks.append(chunk({}, "stop"))

    stream_options = request.get("stream_options") or {}
    if stream_options.get("include_usage"):
        for c in chunks:
            c["usage"] = None
        usage_chunk = chunk({})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = USAGE
        chunks.append(usage_chunk)
    return chunks


def _error_body(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


class LoopbackHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler for test servers on loopback: TCP_NODELAY, and each response
    written in one call (see the module docstring). Shared with capture.py's OTLP receiver."""

    # HTTP/1.1 keeps connections alive so the clients' pools are reused between requests.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        # Silence the default per-request stderr logging.
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n"
            "x-request-id: req_conformance\r\n"
            "\r\n"
        ).encode("ascii")
        self.wfile.write(head + body)
        self.wfile.flush()


class _Handler(LoopbackHandler):
    server: FakeOpenAIServer

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
            return
        self._send_json(404, _error_body(f"Unknown path {self.path}", "invalid_request_error", None))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path not in CHAT_PATHS:
            self._send_json(404, _error_body(f"Unknown path {path}", "invalid_request_error", None))
            return
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send_json(400, _error_body("Body is not JSON", "invalid_request_error", None))
            return
        self.server.record(request)
        if str(request.get("model", "")).startswith(FAIL_MODEL_PREFIX):
            self._send_json(
                400,
                _error_body(
                    f"The model `{request['model']}` does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
            return
        if request.get("stream"):
            events = [f"data: {json.dumps(c)}\n\n" for c in chat_completion_chunks(request)]
            events.append("data: [DONE]\n\n")
            self._send(200, "".join(events).encode(), "text/event-stream; charset=utf-8")
            return
        self._send_json(200, chat_completion(request))


class FakeOpenAIServer(ThreadingHTTPServer):
    """Threaded fake server; ``requests`` holds every chat request body received, in order."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@contextlib.contextmanager
def serving(server: S) -> Iterator[S]:
    """Serve ``server`` from a background thread for the block; shared with capture.py."""
    thread = threading.Thread(target=server.serve_forever, name=type(server).__name__, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def running_fake_server() -> contextlib.AbstractContextManager[FakeOpenAIServer]:
    """Run a :class:`FakeOpenAIServer` on an ephemeral port in a background thread."""
    return serving(FakeOpenAIServer())


@contextlib.contextmanager
def running_fake_openai() -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT/v1``) of a running fake OpenAI server."""
    with running_fake_server() as server:
        yield server.base_url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: ephemeral)")
    args = parser.parse_args()
    server = FakeOpenAIServer(args.port)
    print(f"fake OpenAI listening on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
