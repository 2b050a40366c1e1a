"""Credential detection with detect-secrets' plugins, run over in-memory text.

detect-secrets is built to scan files in a repository: its ``scan_line`` entry point works
through process-global settings (``transient_settings`` swaps them, which is not thread-safe),
and ``BasePlugin.analyze_line`` *verifies* candidates over the network (Slack, Stripe, ...)
whenever the verification filter is configured. So the plugins are instantiated directly, each
line is passed to ``plugin.analyze_string`` (pure regex work, no settings, no verification), and
the library's own heuristic filters are applied here as the plain functions they are.

What is on by default, and why:

* every named-format plugin (AWS, GitHub, Slack, Stripe, private keys, JWTs, ...): the formats
  are specific, so a hit is almost always a real credential (score 1.0);
* ``Secret Keyword`` in its quotes-required form (``password = "..."``, ``"api_key": "..."``):
  precise enough on prose because it needs an assignment and a quoted value (score 0.6);
* off: ``Base64 High Entropy String`` and ``Hex High Entropy String``, because agent traffic
  is full of high-entropy strings that are not secrets (ids, hashes, UUIDs, base64 images), and
  ``Public IP (ipv4)``, because an IP address is personal data, which ``PiiScanner`` reports.
  Name them in ``secret_types`` to turn them on.

Not applied: detect-secrets' ``pragma: allowlist secret`` comment, since in agent traffic the
text is written by whoever the scan is guarding against.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from proctor.detectors._budget import Budget, run_bounded
from proctor.detectors.base import Finding, ScanResult

__all__ = ["DEFAULT_OFF_SECRET_TYPES", "SecretScanner", "available_secret_types"]

DEFAULT_OFF_SECRET_TYPES: frozenset[str] = frozenset(
    {"Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)"}
)
_KEYWORD = "Secret Keyword"
# Long single-line inputs (minified JSON) are cut into windows so the budget is checked often
# and no plugin regex sees more than this at once. Windows overlap by more than any secret.
_WINDOW = 4_096
_WINDOW_OVERLAP = 256
_PRIVATE_KEY = "Private Key"
_PEM_BEGIN_DASHES = re.compile(r"-{5}$")
_PEM_END = re.compile(r"-{5}END[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z0-9 ]{0,20}-{5}")
_DELIMITERS = frozenset(" \t\"'=:,;[](){}<>`")
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-+/=.]+")


@dataclass(frozen=True, slots=True)
class _Plugin:
    secret_type: str
    instance: Any
    analyze: Callable[[str], Iterable[str]]
    prefilter: re.Pattern[str] | None  # a line without a match cannot hold this secret
    named_format: bool  # a RegexBasedDetector for one specific credential format
    entropy_limit: float | None  # for the high-entropy plugins
    score: float


_plugins: dict[str, _Plugin] | None = None
_plugins_lock = threading.Lock()


def _load_plugins() -> dict[str, _Plugin]:
    global _plugins
    if _plugins is None:
        with _plugins_lock:
            if _plugins is None:
                from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
                from detect_secrets.plugins.base import RegexBasedDetector
                from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
                from detect_secrets.plugins.keyword import DENYLIST

                # The keyword plugin's regexes cost more than all the others together; its
                # keywords are plain words, so a line without any is skipped cheaply.
                keyword_prefilter = re.compile("|".join(DENYLIST), re.IGNORECASE)
                loaded: dict[str, _Plugin] = {}
                classes: dict[str, type[Any]] = dict(get_mapping_from_secret_type_to_class())
                for secret_type, cls in classes.items():
                    instance = cls()
                    named = isinstance(instance, RegexBasedDetector)
                    entropy = (
                        instance.entropy_limit if isinstance(instance, HighEntropyStringsPlugin) else None
                    )
                    loaded[secret_type] = _Plugin(
                        secret_type=secret_type,
                        instance=instance,
                        analyze=instance.analyze_string,
                        prefilter=keyword_prefilter if secret_type == _KEYWORD else None,
                        named_format=named,
                        entropy_limit=entropy,
                        score=1.0 if named else 0.6 if secret_type == _KEYWORD else 0.5,
                    )
                _plugins = loaded
    return _plugins


def available_secret_types() -> frozenset[str]:
    """Every detect-secrets plugin's ``secret_type`` that can be named in ``secret_types``."""
    return frozenset(_load_plugins())


def _filters() -> tuple[Callable[[str], bool], ...]:
    from detect_secrets.filters import heuristic

    return (
        heuristic.is_sequential_string,  # "abcdefgh", "12345678"
        heuristic.is_potential_uuid,
        heuristic.is_templated_secret,  # "{password}", "<token>", "${KEY}"
        heuristic.is_not_alphanumeric_string,  # "********"
    )


def _is_false_positive(
    plugin: _Plugin, secret: str, line: str, filters: tuple[Callable[[str], bool], ...]
) -> bool:
    from detect_secrets.filters import heuristic

    if any(f(secret) for f in filters):
        return True
    if plugin.named_format:
        return False
    # For the generic plugins only: a specific credential format is not excused by its context.
    if (
        plugin.entropy_limit is not None
        and plugin.instance.calculate_shannon_entropy(secret) <= plugin.entropy_limit
    ):
        return True
    return (
        heuristic.is_prefixed_with_dollar_sign(secret)  # "$PASSWORD"
        or heuristic.is_indirect_reference(line)  # password = get_secret()
        or heuristic.is_likely_id_string(secret, line, plugin.instance)
    )


def _windows(line: str) -> Iterable[tuple[int, str]]:
    if len(line) <= _WINDOW:
        yield 0, line
        return
    start = 0
    while start < len(line):
        yield start, line[start : start + _WINDOW]
        if start + _WINDOW >= len(line):
            return
        start += _WINDOW - _WINDOW_OVERLAP


class SecretScanner:
    """Finds credentials (API keys, tokens, private keys, passwords in assignments) in text.

    ``secret_types`` names detect-secrets plugins by their ``secret_type``; by default all but
    ``DEFAULT_OFF_SECRET_TYPES``. Finding.kind is the plugin's ``secret_type``.
    """

    name = "secrets"

    def __init__(
        self,
        secret_types: Iterable[str] | None = None,
        *,
        max_chars: int = 100_000,
        timeout_s: float | None = 0.5,
    ) -> None:
        plugins = _load_plugins()
        if secret_types is None:
            wanted = set(plugins) - DEFAULT_OFF_SECRET_TYPES
        else:
            wanted = set(secret_types)
            unknown = wanted - set(plugins)
            if unknown:
                raise ValueError(f"unknown secret types {sorted(unknown)}; available: {sorted(plugins)}")
        self.secret_types: tuple[str, ...] = tuple(sorted(wanted))
        self._plugins = tuple(plugins[t] for t in self.secret_types)
        self._filters = _filters()
        self.max_chars = max_chars
        self.timeout_s = timeout_s

    def scan(self, text: str) -> ScanResult:
        return run_bounded(self._work, text, max_chars=self.max_chars, timeout_s=self.timeout_s)

    def _work(self, text: str, budget: Budget) -> None:
        seen: set[tuple[str, int, int]] = set()
        line_start = 0
        for raw_line in text.splitlines(keepends=True):
            if budget.exhausted():
                return
            line = raw_line.rstrip("\r\n")
            for window_start, window in _windows(line):
                if window_start and budget.exhausted():
                    return
                self._scan_line(text, window, line_start + window_start, budget, seen)
            line_start += len(raw_line)

    def _scan_line(
        self, text: str, line: str, offset: int, budget: Budget, seen: set[tuple[str, int, int]]
    ) -> None:
        if not line.strip():
            return
        for plugin in self._plugins:
            if plugin.prefilter is not None and not plugin.prefilter.search(line):
                continue
            spans = _format_spans(plugin, line) if plugin.named_format else _value_spans(plugin, line)
            for start, end in spans:
                if _is_false_positive(plugin, line[start:end], line, self._filters):
                    continue
                key = (plugin.secret_type, offset + start, offset + end)
                if plugin.secret_type == _PRIVATE_KEY:
                    key = (_PRIVATE_KEY, *_whole_pem_block(text, key[1], key[2]))
                if key not in seen:
                    seen.add(key)
                    budget.findings.append(
                        Finding(
                            detector="secrets",
                            kind=plugin.secret_type,
                            start=key[1],
                            end=key[2],
                            score=plugin.score,
                        )
                    )


def _format_spans(plugin: _Plugin, line: str) -> Iterable[tuple[int, int]]:
    """Spans of a named-format plugin's matches, from its own regexes.

    ``analyze_string`` returns capture groups, which for some plugins is the secret (the
    password in ``scheme://user:password@host``) and for others a fragment (``ghp`` of a GitHub
    token). A group of 8+ characters is taken as the secret; otherwise the whole match is. The
    span then runs on to the end of the token, because several patterns match a fixed-length
    prefix of a longer credential (Stripe keys, a JWT's signature) and redaction must not leave
    the rest behind.
    """
    for regex in plugin.instance.denylist:
        for m in regex.finditer(line):
            start, end = m.span()
            for g in range(m.re.groups, 0, -1):
                if m.group(g) and len(m.group(g)) >= 8:
                    start, end = m.span(g)
                    break
            # Some patterns include their delimiters: (?:\s|=|:|"|^)AKC...(?:\s|"|$).
            while start < end and line[start] in _DELIMITERS:
                start += 1
            while end > start and line[end - 1] in _DELIMITERS:
                end -= 1
            tail = _TOKEN_TAIL.match(line, end)
            if tail:
                end = tail.end()
                while end > start and line[end - 1] in ".=-" and not line[start:end].endswith("=="):
                    end -= 1
            if end > start:
                yield start, end


def _whole_pem_block(text: str, start: int, end: int) -> tuple[int, int]:
    """The plugin matches the ``BEGIN ... PRIVATE KEY`` header; the secret is the key body after
    it, so the finding runs from the opening dashes to the matching END line (within 16 KB)."""
    if _PEM_BEGIN_DASHES.search(text, max(0, start - 5), start):
        start -= 5
    m = _PEM_END.search(text, end, end + 16_384)
    return start, m.end() if m else end


def _value_spans(plugin: _Plugin, line: str) -> Iterable[tuple[int, int]]:
    """Spans of every occurrence of the values a generic plugin returned."""
    for secret in set(plugin.analyze(line)):
        if not secret:
            continue
        pos = line.find(secret)
        while pos != -1:
            yield pos, pos + len(secret)
            pos = line.find(secret, pos + len(secret))
