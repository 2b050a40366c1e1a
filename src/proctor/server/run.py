"""Running the server with uvicorn, announcing the URL once it accepts connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import uvicorn

from proctor.server.app import create_app
from proctor.server.auth import allowed_hosts
from proctor.ui.live import end_streams


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None] | None, url: str) -> None:
        super().__init__(config)
        self._announce = announce
        self._url = url
        self.ready = threading.Event()

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        if self.started:
            if self._announce:
                self._announce(f"Proctor is listening on {self._url}  (API: {self._url}/api/traces, "
                               f"reference: {self._url}/reference)")
            self.ready.set()

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        # uvicorn waits for every open response before it runs the lifespan shutdown, and the
        # console's live streams (server-sent events) never end by themselves: end them first
        end_streams(self.config.app)
        await super().shutdown(sockets)


def make_server(
    host: str = "127.0.0.1", port: int = 7070, database_url: str | None = None, log_level: str = "warning",
    announce: Callable[[str], None] | None = None, policy: str | list[str] | None = None,
    approval_webhook: str | None = None, alert_rules: str | list[str] | None = None,
) -> _AnnouncingServer:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    app = create_app(database_url, policy=policy, approval_webhook=approval_webhook, alert_rules=alert_rules,
                     console_url=url, allowed_hosts=allowed_hosts(bound=host))
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    return _AnnouncingServer(config, announce, url)


def run_server(workers: int = 1, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Serve until interrupted. ``workers > 1`` runs that many processes on one socket: the
    decode and normalize work then uses more cores (each process has its own batched writer;
    SQLite still takes one commit at a time, PostgreSQL takes them in parallel)."""
    if workers <= 1:
        make_server(**kwargs).run()
        return
    import os

    from proctor.store import database_url, open_engine

    url = database_url(kwargs.get("database_url"))
    open_engine(url).dispose()  # migrate once, here, not in every worker at the same moment
    os.environ["PROCTOR_DATABASE_URL"] = url  # the workers' create_app() reads it
    host, port = kwargs.get("host", "127.0.0.1"), kwargs.get("port", 7070)
    announce = kwargs.get("announce")
    if announce:
        shown = f"[{host}]" if ":" in host else host
        announce(f"Proctor is starting {workers} workers on http://{shown}:{port}  "
                 f"(API: http://{shown}:{port}/api/traces)")
    uvicorn.run(
        "proctor.server.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level=kwargs.get("log_level", "warning"), access_log=False,
        timeout_graceful_shutdown=5,  # a console tab's live stream never ends by itself
    )


def start_in_thread(**kwargs) -> tuple[_AnnouncingServer, threading.Thread]:  # type: ignore[no-untyped-def]
    """Start a server in a daemon thread and wait until it accepts connections (for the demo and tests)."""
    server = make_server(**kwargs)
    thread = threading.Thread(target=server.run, name="proctor-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.ready.wait(0.05):
        # uvicorn exits its thread (sys.exit) when it cannot bind: do not wait out the deadline
        if not thread.is_alive():
            host, port = server.config.host, server.config.port
            raise OSError(f"proctor server could not start on {host}:{port} (is the port in use? try --port)")
        if time.monotonic() > deadline:
            raise RuntimeError("proctor server did not start within 30 s")
    return server, thread
