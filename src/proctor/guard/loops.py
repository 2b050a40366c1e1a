"""Loop and stuck detection over a session's recent steps.

Each detector reads the session's step history (newest last) and says whether the step about
to happen would complete a pattern. They are small and bounded: a window of recent steps,
never the whole session.

- ``repeat``: the same call (tool and canonical arguments) ``threshold`` times in ``window`` steps.
- ``oscillation``: A-B-A-B... — two calls alternating for ``threshold`` full cycles.
- ``error_storm``: ``threshold`` failed steps within ``window`` (retrying into a wall).
- ``ping_pong``: two agents handing the conversation back and forth more than ``threshold`` times.
- ``no_progress``: ``threshold`` consecutive results that brought nothing new (every result
  digest already seen in the session).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice


@dataclass(slots=True)
class Step:
    agent: str
    key: str  # tool name + args digest (or "llm:<model>")
    error: bool = False
    novel: bool = True  # its result was new information


def detect(detector: str, steps: deque[Step], upcoming: Step, threshold: int, window: int) -> str | None:
    """A reason string when ``upcoming`` completes the pattern, else None."""
    if detector == "repeat":
        key = upcoming.key
        n = 1
        for s in islice(reversed(steps), window) if window else steps:
            if s.key == key:
                n += 1
        if n >= threshold:
            return f"the same call {_name(upcoming.key)} {n} times in the last {min(len(steps), window) + 1} steps"
        return None
    if detector == "oscillation":
        # most calls fail the first test: B-A then A-B is the only way into the pattern
        if len(steps) < 2 * threshold - 1 or steps[-2].key != upcoming.key or steps[-1].key == upcoming.key:
            return None
        seq = [s.key for s in _last(steps, 2 * threshold - 1)] + [upcoming.key]
        if len(seq) < 2 * threshold:
            return None
        a, b = seq[0], seq[1]
        if a != b and all(k == (a if i % 2 == 0 else b) for i, k in enumerate(seq)):
            return f"{_name(a)} and {_name(b)} alternating {threshold} times"
        return None
    if detector == "error_storm":
        n = 0
        for s in islice(reversed(steps), window) if window else steps:
            if s.error:
                n += 1
        if n >= threshold:
            return f"{n} failed steps in the last {min(len(steps), window) if window else len(steps)}; " \
                   "retrying into the same wall"
        return None
    if detector == "ping_pong":
        agents = [s.agent for s in steps] + [upcoming.agent]
        # count hand-offs between the same two agents, back from the newest step
        exchanges, pair = 0, None
        for prev, cur in zip(reversed(agents[:-1]), reversed(agents[1:]), strict=True):
            if prev == cur:
                continue
            p = frozenset((prev, cur))
            if pair is None:
                pair = p
            elif p != pair:
                break
            exchanges += 1
        if pair is not None and exchanges > threshold:
            a, b = sorted(pair)
            return f"{a} and {b} handed the conversation back and forth {exchanges} times"
        return None
    if detector == "no_progress":
        tail = _last(steps, threshold)
        if len(tail) >= threshold and not any(s.novel for s in tail):
            return f"the last {threshold} steps brought no new information"
        return None
    raise ValueError(f"unknown loop detector {detector!r}")


def _last(steps: deque[Step], n: int) -> list[Step]:
    """The newest ``n`` steps, oldest first, without copying the whole history."""
    if not n or n >= len(steps):
        return list(steps)
    out = list(islice(reversed(steps), n))
    out.reverse()
    return out


def _name(key: str) -> str:
    return key.split("#", 1)[0]
