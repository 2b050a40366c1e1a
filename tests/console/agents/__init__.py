"""Small agents the console tests run as subprocesses (real SDK, real guard, one process each),
and the helpers that run a command and read what it prints as it goes: :class:`OutputProcess`
for any command (the journey test runs ``proctor demo`` with it), :class:`AgentProcess` for one
of these agents."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


class OutputProcess:
    """``argv`` in ``cwd``, its stdout read line by line in a thread, its stderr kept in a file."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        # stderr to a file: a pipe nobody reads would block a chatty process once it is full
        self.stderr_path = cwd / f"{name}-{os.getpid()}-{time.monotonic_ns()}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(list(argv), cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, wanted: str | re.Pattern[str], timeout: float) -> str:
        """The next line starting with ``wanted`` (a string) or matching it anywhere (a compiled
        pattern); fails, with what the process printed, after ``timeout`` seconds."""
        def hit(line: str) -> bool:
            return line.startswith(wanted) if isinstance(wanted, str) else wanted.search(line) is not None

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if hit(line):
                return line
        said = "\n".join(self.lines[-40:])
        raise AssertionError(f"{self.name} did not print {getattr(wanted, 'pattern', wanted)!r} within {timeout} s "
                             f"(exit {self.proc.poll()}); its last lines:\n{said}\nstderr:\n{self.stderr_tail()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout} s; it printed {self.lines[-40:]}") from None

    def interrupt(self, timeout: float) -> int | None:
        """Ctrl-C, as a user would stop it; the exit code, or None when it had to be killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)  # it ends at EOF, once the process has gone
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        self._stderr.close()


class AgentProcess(OutputProcess):
    """``python tests/console/agents/<script> args...`` (the SDK told not to look for a server in
    the environment: each agent gets its server's URL as an argument)."""

    def __init__(self, script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, str(HERE / script), *args], cwd=cwd, name=f"the agent {script}",
                         env={"PROCTOR_URL": "", **(env or {})})


@dataclass
class Governed:
    """A server on a fresh database, a policy file for the agents, their working folder, and an
    engine on the same database (as another process would have)."""

    url: str
    db: str
    policy: Path
    folder: Path
    engine: Any

    def agent(self, script: str, *args: str) -> AgentProcess:
        return AgentProcess(script, self.url, self.db, str(self.policy), *args, cwd=self.folder)


@contextmanager
def governed_server(folder: Path, policy: str) -> Iterator[Governed]:
    from console.conftest import serve, stop
    from proctor.store import open_engine

    db = f"sqlite:///{folder / 'proctor.db'}"
    policy_file = folder / "policy.yaml"
    policy_file.write_text(policy)
    url, server, thread = serve(db)
    engine = open_engine(db)
    try:
        yield Governed(url, db, policy_file, folder, engine)
    finally:
        stop(server, thread)
        engine.dispose()
