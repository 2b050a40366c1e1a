"""Small agents the console tests run as subprocesses (real SDK, real guard, one process each),
and :class:`AgentProcess`, which runs one and reads what it prints as it goes."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent


class AgentProcess:
    """``python tests/console/agents/<script> args...``, its stdout read line by line in a thread."""

    def __init__(self, script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        # stderr to a file: a pipe nobody reads would block a chatty agent once it is full
        self.stderr_path = cwd / f"{Path(script).stem}-{os.getpid()}-{time.monotonic_ns()}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
            stderr=self._stderr, env={**os.environ, "PROCTOR_URL": "", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next line starting with ``prefix``; fails (with what the agent said) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"the agent did not print {prefix!r} within {timeout} s; it printed {self.lines} "
                             f"(exit {self.proc.poll()}), stderr:\n{self.stderr_tail()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit within {timeout} s; it printed {self.lines}") from None

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
