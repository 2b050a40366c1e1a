"""Running a scan within a size and a time budget.

A Python thread cannot be killed, so a time budget needs two halves: the caller waits on a
future with a timeout (so it is never late), and the scan itself works in small steps and
checks a shared ``Budget`` between them (so a scan that has been given up on stops soon after
and frees its worker). Findings are appended to the budget as they are made, so a scan that
runs out of time still reports whatever it found; the caller's fail mode decides what that means.

The pool is small and shared by every scanner in the process: scans are CPU-bound under the
GIL, so more threads would not make them faster, only let more abandoned scans pile up. A scan
waiting in the queue spends its own budget, so a saturated pool turns into timeouts, not hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from proctor.detectors.base import Finding, ScanResult

_POOL_WORKERS = 2
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="proctor-scan")
    return _pool


class Budget:
    """Shared between the waiting caller and the scanning worker."""

    __slots__ = ("cancelled", "deadline", "findings", "gave_up")

    def __init__(self, timeout_s: float | None) -> None:
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.findings: list[Finding] = []
        self.cancelled = False  # set by the caller once it stops waiting
        self.gave_up = False  # set by the worker when it stopped early on its own

    def exhausted(self) -> bool:
        """True when the scan should stop now. Workers call this between steps."""
        if self.cancelled:
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.gave_up = True
            return True
        return False


def run_bounded(
    work: Callable[[str, Budget], None],
    text: str,
    *,
    max_chars: int,
    timeout_s: float | None,
) -> ScanResult:
    """Run ``work(text[:max_chars], budget)`` on the shared pool and wait at most ``timeout_s``.

    ``timeout_s=None`` runs the scan inline in the calling thread with no time limit (batch
    jobs over stored traces). Exceptions from the scan propagate: a broken scanner is an error
    for the caller to handle, not a clean result.
    """
    started = time.perf_counter()
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars]
    budget = Budget(timeout_s)
    if timeout_s is None:
        work(text, budget)
        timed_out = False
    else:
        future: Future[None] = _executor().submit(work, text, budget)
        try:
            future.result(timeout=timeout_s)
            timed_out = budget.gave_up
        except FutureTimeout:
            budget.cancelled = True
            timed_out = True
    return ScanResult(
        findings=sorted(budget.findings, key=lambda f: (f.start, f.end, f.kind)),
        truncated=truncated,
        timed_out=timed_out,
        elapsed_s=time.perf_counter() - started,
    )
