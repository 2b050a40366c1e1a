"""Provenance: did a value in a tool call's arguments come from untrusted content?

An injected instruction is only dangerous once the agent acts on it, and acting usually means
copying something the attacker wrote (an address, a URL, an account number) into a tool call.
``TaintTracker.observe`` records the distinctive tokens of everything an agent reads from an
untrusted source (a web page, an email, another agent); ``check`` reports which tokens of a
tool call's arguments were first seen there. It is exact matching of normalized tokens, not
data-flow analysis: cheap enough to run on every tool call (one regex pass over the arguments
and a dict lookup per token), and blind to values the model rewrote.

Tokens are the things worth tracking: email addresses, URLs, host names (from URLs and emails,
and bare names with a public suffix), IP addresses, IBANs, digit runs of 7-19 digits (phone,
account and card numbers; dates excluded) and identifier-like atoms of 6+ characters that mix
letters and digits ("ORD-88231", "acct_9921x", hashes) or are long mixed-case strings (random
tokens). Plain words, snake_case words without digits and a short stoplist of common
identifier-shaped words ("utf-8", "x86_64", "gpt-4o") are not tokens: they are everywhere, so
they would only produce noise. Memory is bounded: the tracker keeps the most recently seen
``max_tokens`` tokens (LRU) and the first few sources of each.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from proctor.detectors._tld import has_public_suffix
from proctor.detectors.base import iter_leaves

__all__ = ["TaintHit", "TaintTracker", "Token", "extract_tokens"]

_TOKEN = re.compile(
    r"""
     (?P<url>\b(?i:https?|ftp)://[^\s<>"'`{}|\\^\[\]]{2,2048})
    |(?P<email>\b[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9][A-Za-z0-9\-]{0,62}(?:\.[A-Za-z0-9\-]{1,63})+)
    |(?P<ip>(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]))
    |(?P<iban>\b[A-Z]{2}\d{2}(?:\ ?[A-Z0-9]{4}){2,7}(?:\ ?[A-Z0-9]{1,4})?\b)
    |(?P<number>(?<![\w.])\+?\(?\d[\d\ ().\-]{4,28}\d(?!\w))
    |(?P<word>\b(?=[A-Za-z0-9_.\-]{0,127}[0-9.]|[A-Za-z0-9_.\-]{16})[A-Za-z0-9_][A-Za-z0-9_.\-]{4,126}[A-Za-z0-9_])
    """,
    re.VERBOSE,
)
_URL_TRAILING = ".,;:!?)'\""
_URL_HOST = re.compile(r"^[a-z]+://(?:[^/?#@]*@)?([^/?#:]+)", re.IGNORECASE)
_HOSTNAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9\-]{0,62}")
_DATE = re.compile(r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))(?!\d)")
_VERSION = re.compile(r"v?\d+(?:\.\d+)+(?:[-.]?[a-z]+\d*)?")
_IP = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_HAS_DIGIT = re.compile(r"\d")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_NOT_DIGIT = re.compile(r"\D")
# Reserved and private-use TLDs: not in the public suffix list, but real in agent traffic.
_PRIVATE_TLDS = frozenset(
    {"example", "test", "invalid", "local", "localhost", "internal", "corp", "lan", "home", "intranet"}
)
# File extensions that happen to be country TLDs: "setup.py" is a file, not a host.
_FILE_TLDS = frozenset(
    {"py", "md", "rs", "sh", "pl", "so", "am", "cc", "cs", "ts", "ps", "rb", "ai", "zip", "mov"}
)
_STOPLIST = frozenset(
    [
        "utf-8",
        "utf-16",
        "utf-32",
        "utf8mb4",
        "iso-8859-1",
        "iso8601",
        "rfc3339",
        "sha256",
        "sha-256",
        "sha512",
        "sha-512",
        "base64",
        "base32",
        "x86_64",
        "amd64",
        "arm64",
        "aarch64",
        "ipv4",
        "ipv6",
        "oauth2",
        "http/1.1",
        "win32",
        "win64",
        "python3",
        "covid-19",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "float32",
        "float64",
        "bfloat16",
        "gpt-4",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-3.5-turbo",
        "gpt-5",
        "claude-3",
        "es2015",
        "es2020",
        "1080p",
    ]
)
_MAX_SOURCES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Token:
    """A normalized token and where it is in the text it was extracted from."""

    kind: str  # "email" | "url" | "domain" | "ip" | "iban" | "number" | "id"
    value: str  # normalized: lowercase, stripped; digits only for numbers
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TaintHit:
    """A token in a checked value that was first seen in untrusted content."""

    path: str  # where in the checked value, e.g. "args.to"
    value: str  # the token as written in the checked value
    source: str  # the first source it was observed in, e.g. "tool:web.fetch"
    token: str  # the normalized token
    kind: str = ""  # the token's kind when it was observed (see Token.kind)


def _domain_token(host: str, start: int) -> Token | None:
    host = host.lower().rstrip(".")
    if not _HOSTNAME.fullmatch(host):
        return None
    return Token("domain", host, start, start + len(host))


def _is_domain(word: str) -> bool:
    if "." not in word or not _HOSTNAME.fullmatch(word):
        return False
    tld = word.rsplit(".", 1)[1]
    if tld in _PRIVATE_TLDS:
        return True
    return tld not in _FILE_TLDS and has_public_suffix(word)


def _is_identifier(word: str) -> bool:
    if len(word) < 6 or word in _STOPLIST or _VERSION.fullmatch(word):
        return False
    if _HAS_DIGIT.search(word) and _HAS_LETTER.search(word):
        return True
    # A long mixed-case string with no digits is a random token, not a word.
    return len(word) >= 16 and word.lower() != word and word.upper() != word


def extract_tokens(text: str) -> Iterator[Token]:
    """The tokens of ``text`` in order; an email or URL also yields its host as a domain."""
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        raw = m.group()
        start = m.start()
        if kind == "url":
            raw = raw.rstrip(_URL_TRAILING)
            yield Token("url", raw.lower(), start, start + len(raw))
            host = _URL_HOST.match(raw)
            if host:
                if _IP.fullmatch(host.group(1)):
                    yield Token("ip", host.group(1), start + host.start(1), start + host.end(1))
                else:
                    tok = _domain_token(host.group(1), start + host.start(1))
                    if tok:
                        yield tok
        elif kind == "email":
            yield Token("email", raw.lower(), start, m.end())
            at = raw.index("@") + 1
            tok = _domain_token(raw[at:], start + at)
            if tok:
                yield tok
        elif kind == "ip":
            yield Token("ip", raw, start, m.end())
        elif kind == "iban":
            yield Token("iban", raw.replace(" ", "").lower(), start, m.end())
        elif kind == "number":
            digits = _NOT_DIGIT.sub("", raw)
            if 7 <= len(digits) <= 19 and not _DATE.search(raw):
                yield Token("number", digits, start, m.end())
                if raw.startswith("+"):
                    national = _national_number(raw)
                    if national and national != digits:
                        # "+1 (415) 555-0100" is also written "415-555-0100": track both.
                        yield Token("number", national, start, m.end())
        else:
            word = raw.lower()
            if _is_domain(word):
                yield Token("domain", word, start, m.end())
            elif _is_identifier(raw):
                yield Token("id", word, start, m.end())


@lru_cache(maxsize=4096)
def _national_number(raw: str) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    national = str(number.national_number)
    return national if len(national) >= 7 else None


def _normalize(token: str) -> str:
    token = token.strip().lower()
    digits = _NOT_DIGIT.sub("", token)
    # A number is stored as its digits; accept it written any way ("+1 (415) 555-0100").
    if digits and len(digits) >= 7 and not _HAS_LETTER.search(token):
        return digits
    return token.replace(" ", "") if re.fullmatch(r"[a-z]{2}\d{2}[a-z0-9 ]+", token) else token


class TaintTracker:
    """Remembers tokens seen in untrusted content and finds them again in tool arguments.

    Thread-safe; memory is bounded by ``max_tokens`` (least recently seen tokens are forgotten
    first) and work per call by ``max_chars`` of leaf text.
    """

    def __init__(self, *, max_tokens: int = 50_000, max_chars: int = 200_000) -> None:
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        # token -> [kind, first source, later sources...]; one small list per token
        self._tokens: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens)

    def observe(self, source: str, value: Any) -> None:
        """Record the tokens of every string in ``value`` as seen in ``source``."""
        found: dict[str, str] = {}  # token -> kind, in order of appearance
        for _, text in self._leaves(value, ""):
            for tok in extract_tokens(text):
                found.setdefault(tok.value, tok.kind)
        if not found:
            return
        with self._lock:
            tokens = self._tokens
            for token, kind in found.items():
                entry = tokens.get(token)
                if entry is None:
                    tokens[token] = [kind, source]
                else:
                    tokens.move_to_end(token)
                    if source not in entry[1:] and len(entry) <= _MAX_SOURCES_PER_TOKEN:
                        entry.append(source)
            while len(tokens) > self.max_tokens:
                tokens.popitem(last=False)

    def check(self, value: Any, *, path: str = "args") -> list[TaintHit]:
        """Tokens in ``value``'s string leaves that were observed in an untrusted source.

        One hit per (leaf, token); a token inside a longer hit (the domain of a tainted email
        address) is not reported separately.
        """
        hits: list[TaintHit] = []
        for leaf_path, text in self._leaves(value, path):
            candidates = list(extract_tokens(text))
            if not candidates:
                continue
            found: list[tuple[Token, list[str]]] = []
            with self._lock:
                for tok in candidates:
                    entry = self._tokens.get(tok.value)
                    if entry:
                        self._tokens.move_to_end(tok.value)
                        found.append((tok, entry))
            if not found:
                continue
            found.sort(key=lambda f: (f[0].start - f[0].end, f[0].start))  # longest first
            kept: list[Token] = []
            reported: set[str] = set()
            for tok, entry in found:
                if tok.value in reported or any(k.start <= tok.start and tok.end <= k.end for k in kept):
                    continue
                kept.append(tok)
                reported.add(tok.value)
                # The kind is what the token was when observed: "de89..." typed in lowercase
                # is still the IBAN that was read.
                hits.append(TaintHit(leaf_path, text[tok.start : tok.end], entry[1], tok.value, entry[0]))
        return hits

    def sources_of(self, token: str) -> tuple[str, ...]:
        """Every source (up to a few, first first) a token was observed in; () if none."""
        with self._lock:
            entry = self._tokens.get(_normalize(token))
            return tuple(entry[1:]) if entry else ()

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def _leaves(self, value: Any, path: str) -> Iterator[tuple[str, str]]:
        budget = self.max_chars
        for leaf_path, text in iter_leaves(value, path):
            if budget <= 0:
                return
            if len(text) > budget:
                text = text[:budget]
            budget -= len(text)
            yield leaf_path, text
