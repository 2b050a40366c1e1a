"""Console tests: Playwright (Python) driving Debian's Chromium against a real server.

* ``demo_db``  — one SQLite database filled by a real ``proctor demo --no-serve`` run (a subprocess,
  so the SDK's process-wide state stays out of the test process). Read-mostly: tests that change
  state (approve, kill switches) use their own server or accept that others share it.
* ``console``  — a server on that database, on a free loopback port. The demo turns auth on:
  ``Console.key`` is its admin key, and ``Console.get`` sends it.
* ``browser``  — one Chromium per test module, from /usr/bin/chromium. Playwright never downloads
  a browser here; ``make test`` installs Debian's package when it is missing.
* ``page``     — a fresh 1280x800 context per test, logged in as the demo's admin when the test
  also uses ``console`` (the demo writes its keys to demo-keys.json). Its screenshot is kept
  under ``test-artifacts/console/`` whatever the outcome, and any JavaScript error fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from proctor.server.run import start_in_thread

from conftest import free_port

CHROMIUM = os.environ.get("PROCTOR_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
DEMO_RUNS = 12  # two rounds of the fleet's scenarios: loops, refunds held for approval, denials, a canary


@dataclass
class Console:
    url: str
    db: str
    key: str | None = None  # the demo's admin key ("you"): the demo turns auth on

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    def get(self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10,
            **params: object) -> httpx.Response:
        """GET ``path`` as the demo's admin (the JSON twins, the API); ``params`` make the query."""
        return httpx.get(self.url + path, params=params or None,  # type: ignore[arg-type]
                         headers={**self.headers, **(headers or {})}, timeout=timeout)


def demo_keys(db: str) -> dict[str, str]:
    """name -> secret of the API keys the demo made (it writes them beside its SQLite database)."""
    path = Path(str(make_url(db).database)).parent / "demo-keys.json"
    if not path.exists():
        return {}
    return {name: k["key"] for name, k in json.loads(path.read_text())["keys"].items()}


def log_in(page, url: str, key: str | None) -> None:  # type: ignore[no-untyped-def]
    """Log the browser context in with ``key`` through POST /login, as the login page does (the
    cookie it gets holds a login token, not the key)."""
    if key:
        r = page.request.post(url + "/login", data=json.dumps({"key": key, "next": "/"}),
                              headers={"content-type": "application/json", "origin": url})
        assert r.ok, r.text()


def _chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`; "
                    "`make test` does this when it is missing) or set PROCTOR_TEST_CHROMIUM", pytrace=False)
    return path


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database holding what `make demo` shows: agents, versions, traces, decisions, approvals, alerts."""
    folder = tmp_path_factory.mktemp("console-demo")
    db = f"sqlite:///{folder / 'proctor.db'}"
    cmd = [sys.executable, "-c", "from proctor.cli.main import main; main()", "demo", "--db", db,
           "--runs", str(DEMO_RUNS), "--no-serve", "--port", str(free_port())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=folder,
                          env={**os.environ, "COLUMNS": "200"})
    (folder / "demo-output.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"the demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return db


def serve(db: str, **kwargs: object) -> tuple[str, object, object]:
    """Start a server on ``db``; returns (url, server, thread). Stop with ``stop(server, thread)``."""
    port = free_port()
    server, thread = start_in_thread(port=port, database_url=db, **kwargs)  # type: ignore[arg-type]
    return f"http://127.0.0.1:{port}", server, thread


def stop(server: object, thread: object) -> None:
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def console(demo_db: str) -> Iterator[Console]:
    url, server, thread = serve(demo_db)
    try:
        yield Console(url, demo_db, demo_keys(demo_db).get("you"))
    finally:
        stop(server, thread)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # one per module, not per session: Playwright's sync API keeps an asyncio loop running in the
    # main thread while it is started, and the suite's later tests call asyncio.run()
    from playwright.sync_api import sync_playwright

    path = _chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    if "console" in request.fixturenames:  # browse the demo's server as its admin
        c = request.getfixturevalue("console")
        log_in(pg, c.url, c.key)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:150]
        with contextlib.suppress(Exception):  # a page that crashed has no screenshot; the test says why
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
