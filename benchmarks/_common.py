"""Helpers shared by the benchmarks: the machine, a Proctor server subprocess, /proc readings.

Linux only: CPU time and memory are read from /proc, as the DESIGN targets are stated
for a Linux host.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
# The console script next to the interpreter running the benchmark (the project's venv).
PROCTOR_BIN = Path(sys.executable).with_name("proctor")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: date, cores, CPU model, Python, library versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        from proctor import __version__ as proctor_version
    except ImportError:  # pragma: no cover - the benchmark runs in the project's venv
        proctor_version = "?"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_1m": load_average(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "proctor": proctor_version,
    }


def load_average() -> float | None:
    """1-minute load average: other work on a 2-core machine skews every number here."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def system_busy_seconds() -> float:
    """CPU seconds all processes spent busy since boot (all cores), from /proc/stat."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def other_cpu_cores(window: float = 1.0) -> float:
    """Cores' worth of CPU used over ``window`` seconds by every process but this one."""
    busy0, own0 = system_busy_seconds(), own_cpu_seconds()
    time.sleep(window)
    return max(0.0, (system_busy_seconds() - busy0) - (own_cpu_seconds() - own0)) / window


def own_cpu_seconds() -> float:
    """CPU of this process (all threads)."""
    return cpu_seconds(os.getpid())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of ``pid`` (all its threads), optionally plus its waited-for children's."""
    f = _stat_fields(pid)
    # after the comm field: f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, e.g. VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def postgres_cpu_seconds() -> float | None:
    """CPU of every local PostgreSQL process (backends, WAL writer, checkpointer, ...).

    Backends that exited are counted through the postmaster's cutime/cstime. Other clients of
    the same PostgreSQL server add to this number; None when no postgres process is visible.
    """
    procs: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() == "postgres":
                procs[int(entry.name)] = _stat_fields(int(entry.name))
        except (OSError, ValueError):
            continue
    total = 0.0
    for f in procs.values():
        ticks = int(f[11]) + int(f[12])
        if int(f[1]) not in procs:  # the postmaster (its parent is not postgres): add reaped children
            ticks += int(f[13]) + int(f[14])
        total += ticks / CLK_TCK
    return total if procs else None


@dataclass
class ServerProcess:
    """``proctor serve`` as a subprocess on a free loopback port, ready when /healthz answers."""

    db_url: str
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    start_s: float = 0.0  # spawn -> first 200 from /healthz

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.port = self.port or free_port()
        cmd = [str(PROCTOR_BIN), "serve", "--port", str(self.port), "--db", self.db_url]
        env = dict(os.environ)
        env.pop("PROCTOR_DATABASE_URL", None)
        log = self.log_path.open("ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = t0 + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(self.url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_tail()}")
                time.sleep(0.005)
        self.start_s = time.perf_counter() - t0
        return self

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mib(self) -> float:
        return status_kib(self.pid, "VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return status_kib(self.pid, "VmHWM") / 1024

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the writer drains
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
