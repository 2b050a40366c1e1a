"""Live pages over server-sent events: one snapshot per change, shared by every open stream.

A :class:`SnapshotHub` owns a ``compute()`` function (blocking: it queries the database) and the
set of browsers listening. Anything that changes the data calls :meth:`SnapshotHub.changed`, from
any thread (the span writer after a durable batch, the decision-log feed). The hub then:

* **coalesces** — computes at most one snapshot per ``min_interval_s`` (stretched to twice the
  time a snapshot takes, so a slow database spends at most about a third of its time on us), in a
  worker thread, never on the event loop;
* **shares** — one snapshot per change for all clients, not one per client;
* **polls** every ``poll_s`` while someone listens, for changes nobody announces (an approval
  decided by another process, an alert, the windows sliding), and sends only what differs;
* **bounds** each client to one pending message: a newer snapshot replaces one not yet sent, so a
  slow client costs one buffer, and the hub never waits for it;
* **drops** clients that disconnect (the stream watches ``http.disconnect``), and sends a comment
  line every ``heartbeat_s`` so proxies and the browser keep an idle stream open;
* **stops** computing when the last client leaves.

Shutdown: uvicorn waits for every open response to finish *before* it runs the lifespan shutdown,
and an event stream never finishes by itself, so a server with a browser tab open would hang.
:func:`end_streams` ends every stream of an app at once; the server calls it as it begins to shut
down (see ``proctor.server.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

__all__ = ["EventStream", "SnapshotHub", "end_streams", "hubs"]

#: Told to the browser's EventSource: how long to wait before reconnecting (ms).
RETRY_MS = 1000


def _encode(snapshot: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(snapshot, option=orjson.OPT_NON_STR_KEYS, default=str) + b"\n\n"


class _Client:
    """One open stream: a single-slot mailbox (the newest message wins) and a wake-up event."""

    __slots__ = ("closed", "pending", "primed", "wake")

    def __init__(self) -> None:
        self.pending: bytes | None = None
        self.primed = False  # has it been sent a snapshot yet?
        self.closed = False
        self.wake = asyncio.Event()

    def offer(self, data: bytes) -> None:
        self.pending = data
        self.primed = True
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class SnapshotHub:
    """Fans snapshots from ``compute()`` out to event streams; see the module docstring.

    ``same(a, b)`` says whether two snapshots show the same thing (default: equal), so that a poll
    that finds nothing new sends nothing. Counters for tests and diagnostics: ``computed`` (how many
    snapshots were made), ``sent`` (messages queued to clients), ``clients``.
    """

    def __init__(
        self,
        compute: Callable[[], dict[str, Any]],
        *,
        min_interval_s: float = 0.25,
        poll_s: float = 2.0,
        heartbeat_s: float = 15.0,
        max_clients: int = 256,
        same: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
    ) -> None:
        self._compute = compute
        self.min_interval_s = min_interval_s
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.max_clients = max_clients
        self._same = same or (lambda a, b: a == b)
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False  # a change is waiting for the next snapshot
        self._closed = False
        self._last: dict[str, Any] | None = None  # the last snapshot published
        self._last_data: bytes | None = None
        self._last_at = 0.0  # monotonic time it was computed
        self.computed = 0
        self.sent = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- called from any thread -------------------------------------------------------------

    def changed(self, *_: Any) -> None:
        """Something the snapshot shows has changed (safe from any thread; cheap when nobody listens).

        Takes and ignores any arguments, so it can subscribe directly to the pipeline and the
        decision feed."""
        loop = self._loop
        if loop is None or self._dirty or not self._clients or self._closed:
            return
        self._dirty = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            loop.call_soon_threadsafe(self._poke)

    # --- event loop side --------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        """End every stream now and refuse new ones (from any thread)."""
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                try:
                    loop.call_soon_threadsafe(self._close_clients)
                    return
                except RuntimeError:  # closed meanwhile
                    pass
        self._close_clients()

    def _close_clients(self) -> None:
        for c in list(self._clients):
            c.close()
        self._clients.clear()
        self._poke()

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first stream (or a new server loop): bind to it
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = None

    def subscribe(self) -> _Client:
        self._attach()
        client = _Client()
        self._clients.add(client)
        fresh = self._last_data is not None and time.monotonic() - self._last_at < self.min_interval_s * 4
        if fresh:
            assert self._last_data is not None
            client.offer(self._last_data)
        else:
            self._dirty = True
            self._poke()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._produce(), name="proctor-live-snapshots")
        return client

    def drop(self, client: _Client) -> None:
        client.close()
        self._clients.discard(client)

    async def _produce(self) -> None:
        wake = self._wake
        assert wake is not None
        interval = self.min_interval_s
        last_end = 0.0
        failing = False
        while not self._closed and self._clients:
            if not self._dirty:
                with contextlib.suppress(TimeoutError):  # a poll: approvals, alerts change unannounced
                    await asyncio.wait_for(wake.wait(), self.poll_s)
            if self._closed or not self._clients:
                break
            delay = last_end + interval - time.monotonic()
            if delay > 0:  # coalesce: everything that changes meanwhile goes into one snapshot
                await asyncio.sleep(delay)
                if self._closed or not self._clients:
                    break
            wake.clear()
            self._dirty = False  # changes from now on ask for another snapshot
            started = time.monotonic()
            try:
                snapshot = await asyncio.to_thread(self._compute)
            except Exception as exc:  # the database away for a moment: keep the streams, retry later
                if not failing:
                    log.warning("live snapshot failed (retrying every %.0f s): %s", self.poll_s, exc,
                                exc_info=True)
                failing = True
                last_end, interval = time.monotonic(), self.poll_s
                continue
            if failing:
                log.info("live snapshots work again")
                failing = False
            last_end = time.monotonic()
            interval = max(self.min_interval_s, 2 * (last_end - started))
            if not self._closed:
                self._publish(snapshot, last_end)

    def _publish(self, snapshot: dict[str, Any], at: float) -> None:
        self.computed += 1
        same = self._last is not None and self._same(self._last, snapshot)
        if not same or self._last_data is None:
            self._last, self._last_data = snapshot, _encode(snapshot)
        self._last_at = at
        data = self._last_data
        for c in self._clients:
            if not same or not c.primed:
                c.offer(data)
                self.sent += 1

    async def events(self, client: _Client) -> AsyncIterator[bytes]:
        """The bytes of one stream: the retry hint, then snapshots and heartbeats until closed."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        while not client.closed:
            try:
                await asyncio.wait_for(client.wake.wait(), self.heartbeat_s)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            client.wake.clear()
            data, client.pending = client.pending, None
            if client.closed:
                break
            if data is not None:
                yield data


class EventStream(Response):
    """An ASGI response streaming one hub client as ``text/event-stream``.

    Unlike a plain StreamingResponse it watches the request side too, so a browser that goes away
    is dropped at once rather than at the next write."""

    media_type = "text/event-stream"

    def __init__(self, hub: SnapshotHub, allowed: Callable[[], Awaitable[bool]] | None = None) -> None:
        # no body: the stream is written in __call__. ``allowed`` is asked before every message
        # (a key revoked while the stream is open ends it, as it ends every later request)
        self.hub = hub
        self.allowed = allowed
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache, no-store"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self.hub
        if hub.closed or hub.clients >= hub.max_clients:
            body = b"the server is shutting down" if hub.closed else b"too many live streams open; retry later"
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"5")]})
            await send({"type": "http.response.body", "body": body})
            return
        client = hub.subscribe()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    hub.drop(client)
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache, no-store"),
                (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
            ]})
            async for chunk in hub.events(client):
                if self.allowed is not None and not await self.allowed():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-write (uvicorn's ClientDisconnected)
            pass
        finally:
            watcher.cancel()
            hub.drop(client)


# --- per-app registry, for shutdown ---------------------------------------------------------------

_registry_lock = threading.Lock()


def hubs(app: Any) -> dict[str, SnapshotHub]:
    """The hubs of ``app`` by name (created on first use by the pages that stream)."""
    with _registry_lock:
        found: dict[str, SnapshotHub] | None = getattr(app.state, "live_hubs", None)
        if found is None:
            found = {}
            app.state.live_hubs = found
        return found


def hub(app: Any, name: str, factory: Callable[[], SnapshotHub]) -> SnapshotHub:
    """``app``'s hub called ``name``, made by ``factory()`` the first time."""
    registry = hubs(app)
    with _registry_lock:
        found = registry.get(name)
        if found is None:
            found = registry[name] = factory()
            if getattr(app.state, "live_ended", False):
                found.close()  # made while the server shuts down: refuse its streams too
        return found


def end_streams(app: Any) -> int:
    """End every live stream of ``app`` now, from any thread (the server is shutting down);
    returns how many were open. Streams asked for afterwards are refused with 503."""
    registry = hubs(app)
    with _registry_lock:
        app.state.live_ended = True
        found = list(registry.values())
    n = 0
    for h in found:
        n += h.clients
        h.close()
    return n
