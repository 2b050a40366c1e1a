"""The pure-Python CEL fast path (:mod:`proctor.policy.fastpath`) against real CEL.

The contract under test: when a fast closure returns, it returns exactly what real CEL returns
for the same variables (a bool); when CEL fails (an error, or a value that is not a bool), the
closure raises. Raising where CEL succeeds is allowed (the caller falls back to CEL) but must be
rare on well-typed input, or the fast path is useless.

Real CEL is run the straightforward way: ``cel.compile(src).execute(cel.Context(variables))``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel
import pytest

from proctor.policy.fastpath import compile_fast, is_plain

RAISE = "raise"


def cel_result(program: cel.Program, variables: dict[str, Any]) -> bool | None:
    """What real CEL makes of a condition: its bool, or None for an error or a non-bool value."""
    try:
        result = program.execute(cel.Context(variables))
    except Exception:
        return None
    return result if isinstance(result, bool) else None


def fast_result(fn: Callable[[Mapping[str, Any]], bool], variables: dict[str, Any]) -> bool | str:
    try:
        result = fn(variables)
    except Exception:
        return RAISE
    assert type(result) is bool, f"fast path returned {result!r}"
    return result


@dataclass
class Stats:
    pairs: int = 0
    cel_ok: int = 0
    fast_ok: int = 0
    typed_cel_ok: int = 0
    typed_fast_ok: int = 0
    disagreements: list[str] = field(default_factory=list)

    def check(self, src: str, program: cel.Program, fn: Callable[[Mapping[str, Any]], bool],
              variables: dict[str, Any], *, typed: bool = False) -> None:
        want = cel_result(program, variables)
        got = fast_result(fn, variables)
        self.pairs += 1
        if want is None:
            if got != RAISE:
                self.disagreements.append(f"{src!r} on {variables!r}: CEL fails, fast path says {got}")
            return
        self.cel_ok += 1
        self.typed_cel_ok += typed
        if got == RAISE:
            return
        self.fast_ok += 1
        self.typed_fast_ok += typed
        if got is not want:
            self.disagreements.append(f"{src!r} on {variables!r}: CEL says {want}, fast path says {got}")

    def report(self, label: str) -> str:
        typed = f", well-typed hit rate {self.typed_fast_ok}/{self.typed_cel_ok}" if self.typed_cel_ok else ""
        return (f"{label}: {self.pairs} pairs, CEL returned a bool in {self.cel_ok}, "
                f"fast path returned in {self.fast_ok} ({self.fast_ok / max(self.cel_ok, 1):.1%}){typed}")


# --------------------------------------------------------------------------------------------
# Variables: seeded, plain data (what a JSON decoder yields), well-typed or deliberately not

ASCII_STRINGS = ["", "a", "b", "eu", "us", "gold", "silver", "send_email", "delete_file", "tool_call",
                 "llm_call", "x@example.com", "boss@example.com", "a@x", "evil@example.com.attacker",
                 "@example.com", "/tmp/", "/tmp/file.txt", "/etc/passwd", "secret sauce", "password: 1",
                 "BEGIN KEY", "gpt-4o", "claude", "prod", "ops-bot", "it's", 'say "hi"', "a\nb\t\\",
                 "x" * 120, "m", "zz", "A", "-1", "3"]
UNICODE_STRINGS = ["héllo", "日本語", "😀", "naïve@example.com", "/tmp/é", "ß"]
INTS = [0, 1, -1, 2, 3, 5, 7, 10, 19, 20, 21, 49, 50, 51, 100, 499, 500, 501, 4000, 4001, 8192, -50,
        2**31, 2**53, 2**53 + 1, -(2**53) - 1, 2**62, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**63) - 1,
        3037000500, -3037000500]
FLOATS = [0.0, -0.0, 0.25, 0.5, 1.0, 1.5, 3.0, 30.0, 50.0, 50.5, 100.5, 499.99, 500.0, 1e300, -1e300,
          math.inf, -math.inf, math.nan, 2.0**53, 2.0**63, 9007199254740992.0, -2.5]


def rand_str(rnd: random.Random, unicode: float = 0.15) -> str:
    return rnd.choice(UNICODE_STRINGS if rnd.random() < unicode else ASCII_STRINGS)


def rand_int(rnd: random.Random) -> int:
    return rnd.choice(INTS) if rnd.random() < 0.6 else rnd.randint(-1000, 1000)


def rand_float(rnd: random.Random) -> float:
    return rnd.choice(FLOATS) if rnd.random() < 0.6 else round(rnd.uniform(-1000, 1000), rnd.randint(0, 3))


def rand_any(rnd: random.Random, depth: int = 0) -> Any:
    r = rnd.random()
    if r < 0.2:
        return rand_int(rnd)
    if r < 0.35:
        return rand_float(rnd)
    if r < 0.55:
        return rand_str(rnd, 0.3)
    if r < 0.62:
        return rnd.choice([True, False])
    if r < 0.68:
        return None
    if r < 0.84 and depth < 3:
        return [rand_any(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if depth < 3:
        keys = ["tier", "owner", "level", "nested", "deep", "title", "a", "b", "x"]
        value: dict[Any, Any] = {k: rand_any(rnd, depth + 1) for k in rnd.sample(keys, rnd.randint(0, 3))}
        if rnd.random() < 0.1:
            value[rnd.choice([1, True, 2])] = "non-string key"  # CEL takes int and bool keys
        return value
    return rand_str(rnd)


def typed_variables(rnd: random.Random) -> dict[str, Any]:
    """What a real action looks like: expected types, ordinary values, a few absent fields."""
    def num() -> int | float:
        return rnd.choice([rnd.randint(0, 1000), rnd.randint(0, 100_000) / 100, rnd.choice([50, 500, 0])])

    args: dict[str, Any] = {
        "amount_usd": num(),
        "reason": rand_str(rnd, 0.05),
        "to": rnd.choice(["a@example.com", "boss@example.com", "x@evil.com", "naïve@example.com", "a@x"]),
        "body": rand_str(rnd, 0.05),
        "region": rnd.choice(["eu", "us", "apac", "gold"]),
        "count": rnd.randint(0, 12),
        "path": rnd.choice(["/tmp/x", "/etc/passwd", "/tmp/", "relative"]),
        "recipients": [rnd.choice(["a@example.com", "b@example.com"]) for _ in range(rnd.randint(0, 5))],
        "tags": rnd.sample(["a", "b", "gold", "eu", "x"], rnd.randint(0, 4)),
        "meta": {"owner": rnd.choice(["ops-bot", "alice"]), "level": rnd.randint(-5, 5),
                 "nested": {"deep": rnd.choice(["x", "y"])}},
        "flag": rnd.random() < 0.5,
        "ratio": rnd.random(),
        "big": rnd.randint(-(2**40), 2**40),
    }
    for key in rnd.sample(sorted(args), rnd.randint(0, 2)):  # an optional field left out
        del args[key]
    return {
        "args": args,
        "tool": {"name": rnd.choice(["send_email", "delete_file", "search"]),
                 "side_effect": rnd.choice(["read", "write", "external"])},
        "agent": {"name": rnd.choice(["ops-bot", "alice"]), "environment": rnd.choice(["prod", "dev"]),
                  "labels": rnd.choice([{"tier": "gold"}, {"tier": "silver"}, {}])},
        "session": {"tool_calls": rnd.randint(0, 40), "cost": round(rnd.uniform(0, 20), 2)},
        "llm": {"model": rnd.choice(["gpt-4o", "claude-3", ""]), "max_tokens": rnd.choice([0, 1000, 4096, 8192])},
        "content": rnd.choice(["", "hello", "the password is 1234", "BEGIN KEY", "x" * 200]),
        "stage": rnd.choice(["tool_call", "llm_call", "tool_result"]),
    }


def chaotic_variables(rnd: random.Random) -> dict[str, Any]:
    """Any value anywhere: missing keys, wrong types, nulls, floats for ints, big ints, unicode,
    nested lists and maps — starting from a well-typed set so the conditions get far enough."""
    variables = typed_variables(rnd)
    for top in ("args", "tool", "agent", "session", "llm"):
        section = variables[top]
        for key in list(section):
            r = rnd.random()
            if r < 0.12:
                del section[key]
            elif r < 0.45:
                section[key] = rand_any(rnd)
    r = rnd.random()
    if r < 0.1:
        variables["content"] = rand_any(rnd)
    elif r < 0.15:
        variables["session"] = None
    elif r < 0.2:
        del variables["stage"]
    elif r < 0.25:
        variables["args"] = rand_any(rnd)
    return variables


def variable_sets(seed: int, typed: int, chaotic: int) -> list[tuple[bool, dict[str, Any]]]:
    rnd = random.Random(seed)
    return [(True, typed_variables(rnd)) for _ in range(typed)] + \
        [(False, chaotic_variables(rnd)) for _ in range(chaotic)]


# --------------------------------------------------------------------------------------------
# 1. A corpus of conditions, each against every variable set

CORPUS = [
    # realistic policy conditions
    "args.amount_usd <= 50",
    "args.amount_usd > 50 && args.amount_usd <= 500",
    "!has(args.reason) || size(args.reason) < 8",
    'args.to.endsWith("@example.com") && size(args.body) <= 4000',
    "session.tool_calls < 20",
    'tool.name == "send_email"',
    'agent.labels["tier"] == "gold"',
    "llm.max_tokens > 4000",
    'args.region in ["eu", "us"]',
    "args.count * 2 + 1 > 10",
    "args.path.startsWith('/tmp/') || args.count == 3",
    "size(args.recipients) <= 3",
    "stage == 'tool_call' && tool.side_effect != 'read'",
    'tool.name in ["send_email", "delete_file"] && !(args.to.endsWith("@example.com"))',
    'llm.model.startsWith("gpt-") && llm.max_tokens <= 8192',
    'agent.labels.tier.startsWith("g") && agent.environment == "prod"',
    'agent.name.endsWith("-bot")',
    'content.contains("password") || content.startsWith("BEGIN")',
    "session.cost >= 1.0 && session.cost < 10.0",
    "!(args.amount_usd > 50) || has(args.reason)",
    "has(args.meta.owner) && args.meta.owner == agent.name",
    "args.count >= 0 && args.count <= 100 && args.count != 50",
    'stage in ["tool_call", "llm_call"]',
    "session.tool_calls * 2 >= 40 ? true : args.count == 3",
    # numbers: int and double, literals, arithmetic, overflow
    "args.amount_usd >= 100.5",
    "args.ratio < 0.5",
    "args.ratio == 1",
    "args.count == 1.0",
    "args.count != 3",
    "args.count - 1 >= 0",
    "-args.count < 0",
    "--args.count == args.count",
    "args.amount_usd * 1.5 > 100.0",
    "args.ratio + 0.25 <= 1.0",
    "args.big + 1 > args.big",
    "args.big * args.big > 0",
    "args.count * 3 - 2 * args.count == args.count",
    "10 - args.count - 2 > 5",
    "args.count - 1 - args.count == -1 && 1 - 2 + 3 == 2",
    "args.count + args.count * args.count > args.count - 1",
    "-1.5 < args.ratio",
    "9223372036854775807 > args.big",
    "-9223372036854775807 - 1 < args.big",
    "args.big == 9007199254740993",
    "args.ratio == 9007199254740993",
    "args.count == args.amount_usd",
    "args.ratio == args.amount_usd",
    "args.count < args.ratio",
    "args.amount_usd > 50 || args.amount_usd <= 50",
    "1.5e2 == 150 && 2e-1 < 0.25",
    # bools, logic, ternary, error absorption
    "args.flag",
    "!args.flag",
    "args.flag == true",
    "args.count == true",
    "args.flag < true",
    "args.flag || args.count > 5",
    "args.flag ? args.count > 1 : args.count < 1",
    "args.missing_field == 1 || true",
    "args.missing_field == 1 && false",
    "args.missing_field == 1 && true",
    "args.count || true",
    "args.reason && false",
    '(args.count > 2 ? "big" : "small") == "big"',
    "args.count > 2 ? args.flag : false",
    "args.flag == (args.count > 0)",
    "1 < 2 == (args.count < 3)",
    # strings
    "args.to < 'm'",
    "args.to >= args.body",
    "args.to + '@x' == 'a@x'",
    "size(args.body) > 0 && args.body.contains('secret')",
    "args.body.size() < 10",
    "size(content) > 100",
    "args.reason.size() + size(args.body) < 50",
    "\"it's\" == args.reason || 'say \"hi\"' == args.reason || args.reason == \"a\\nb\\t\\\\\"",
    "args.reason != null && size(args.reason) >= 0",
    "null == args.reason",
    # lists, maps, membership, indexing
    '"gold" in args.tags',
    "args.count in [1, 2, 3]",
    "args.amount_usd in [50, 100.0]",
    'args.tags == ["a", "b"]',
    "args.meta == agent.labels",
    "args.recipients == args.tags",
    'args.recipients[0] == "boss@example.com"',
    "args.recipients[args.count] != null",
    'args.tags + ["x"] == ["x"]',
    "size(args.tags + args.recipients) > 2",
    "[args.count, args.amount_usd] == [3, 30]",
    "args.region in args.tags",
    '"tier" in agent.labels',
    'args.tags[0] in ["a", "b"]',
    "size(agent.labels) == 1",
    "size([args.count, 1]) == 2",
    "[1, 2, 3][args.count] == 3",
    'args.tags.size() == 0 || args.tags[0] != ""',
    "args.recipients[1] > 0",
    "args.meta.level > 2 || args.meta.level < -2",
    'args.meta.nested.deep == "x"',
    "has(agent.labels.tier)",
    "has(args.meta) && has(args.meta.level)",
    "has(content.title)",
    "args.meta.size() > 2 && 'owner' in args.meta",
    "args.tags in [args.recipients, []]",
]


def test_corpus_against_real_cel() -> None:
    """Every condition x every variable set: the fast path agrees with CEL or raises."""
    assert len(CORPUS) >= 60
    sets = variable_sets(seed=20240501, typed=30, chaotic=30)
    stats = Stats()
    for src in CORPUS:
        fn = compile_fast(src)
        assert fn is not None, f"not in the subset: {src!r}"
        program = cel.compile(src)
        for typed, variables in sets:
            stats.check(src, program, fn, variables, typed=typed)
    print(stats.report("corpus"))
    assert not stats.disagreements, "\n".join(stats.disagreements[:20])
    assert stats.pairs >= 60 * 40
    assert stats.typed_fast_ok >= 0.9 * stats.typed_cel_ok, stats.report("corpus")
    assert stats.fast_ok >= 0.8 * stats.cel_ok, stats.report("corpus")


# Hand-picked cases: what the fast path returns (or that it raises), each checked against CEL too.
A = {"args": {"i": 1, "f": 1.0, "b": True, "n": None, "s": "x", "u": "é", "l": [1, 2.0, "x"], "m": {"k": 1},
              "big": 2**63 - 1, "neg": -(2**63), "uint": 2**63, "huge": 2**64, "nan": math.nan, "k1": {1: "a"},
              "p53": 2**53 + 1, "t": (1, 2), "m2": {"k": 1, "j": 2}}}
CASES: list[tuple[str, bool | str]] = [
    ("args.i == args.f", True),  # ints and doubles compare numerically
    ("1 < 1.5 && 1.5 > 1", True),
    ("args.b == 1", False),  # a bool is not a number
    ("args.n == null", True),
    ('args.i == "1"', False),  # heterogeneous ==: false, not an error
    ("[1, 2] == [1, 2.0]", True),
    ("args.l == [1, 2, 'x']", True),
    ("args.m == args.m", True),
    ("args.m == args.m2", False),
    ("args.m2 == args.m", False),
    ("args.m2 != args.m", True),
    ("args.nan == args.nan", False),
    ("[args.nan] == [args.nan]", False),  # no identity shortcut
    ("args.nan != args.nan", True),
    ("args.nan < 1.0", RAISE),  # CEL: no ordering for NaN
    ("args.p53 == 9007199254740992.0", RAISE),  # CEL converts the int to a double: true there
    ("args.p53 > 9007199254740992.0", RAISE),  # and false here
    ("args.i < 9007199254740992.0", True),
    ("args.big + 1 > 0", RAISE),  # int64 overflow
    ("args.neg - 1 < 0", RAISE),
    ("-args.neg < 0", RAISE),  # CEL wraps around silently here
    ("args.uint > 1", RAISE),  # a uint in CEL
    ("args.huge > 1.0", RAISE),  # a double in CEL
    ("1 + 1.0 == 2.0", RAISE),  # CEL does not mix int and double in arithmetic
    ("size(args.u) == 1", RAISE),  # this CEL says 2 (UTF-8 bytes)
    ("size(args.s) == 1", True),
    ("args.u.startsWith('é')", True),
    ("args.x && false", False),  # error absorbed
    ("args.x || true", True),
    ("args.i && false", False),  # a non-bool operand counts as an error
    ("args.x && true", RAISE),
    ("true && args.i", RAISE),
    ("false && args.x", False),  # short-circuit
    ("true || args.x", True),
    ("args.b ? true : args.x", True),
    ("args.i ? true : false", RAISE),
    ("args.l[3] == 1", RAISE),
    ("args.l[-1] == 1", RAISE),
    ("args.m.z == 1", RAISE),
    ("has(args.m.z)", False),
    ("has(args.n.z)", RAISE),
    ("has(args.s.z)", RAISE),
    ("1 in args.k1", RAISE),  # non-string map keys are left to CEL
    ("'a' in args.k1", False),
    ("args.t == [1, 2]", RAISE),  # a tuple (CEL: a list) is not plain data
    ("args.b < true", RAISE),
    ("args.i", RAISE),  # not a bool
    ("args.s + 'y' == 'xy'", True),
    ("[1] + [2] == [1, 2]", True),
    ("args.l[1] == 2", True),
]


@pytest.mark.parametrize(("src", "expected"), CASES)
def test_cases(src: str, expected: bool | str) -> None:
    fn = compile_fast(src)
    assert fn is not None
    assert fast_result(fn, A) == expected
    want = cel_result(cel.compile(src), A)
    if want is None:
        assert expected == RAISE, f"CEL fails on {src!r}"
    elif expected != RAISE:
        assert expected is want


@pytest.mark.parametrize("value", ["\ud800", b"x", (1, 2), {1, 2}, 2**63, 2**64, -(2**63) - 1])
def test_values_cel_would_see_differently(value: Any) -> None:
    """A value read that CEL cannot take (a lone surrogate, a set) or takes as something else
    (bytes, a tuple as a list, a big int as a uint or a double): the fast path raises."""
    variables = {"args": {"v": value}}
    for src in ["args.v == 'x'", "args.v != 1", "[args.v] == [1]", "has(args.v)", "args['v'] == 1"]:
        fn = compile_fast(src)
        assert fn is not None
        with pytest.raises(Exception):  # noqa: B017 - any exception means "ask CEL"
            fn(variables)
    assert not is_plain(variables)
    assert is_plain({"args": {"v": [1, 2.5, "é", None, True, {"k": []}]}})


# --------------------------------------------------------------------------------------------
# 2. Random expressions from the supported grammar

KINDS = ("bool", "int", "double", "string", "list", "map")


class ExprGen:
    """Random expressions, mostly well-typed, sometimes not; random parenthesisation and spacing
    (so precedence is exercised: an omitted pair of parentheses must mean the same to both)."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def ws(self) -> str:
        return self.rnd.choice(["", " ", " ", " ", "  ", "\n", "\t"])

    def wrap(self, text: str) -> str:
        return f"({text})" if self.rnd.random() < 0.5 else text

    def binary(self, left: str, op: str, right: str) -> str:
        return self.wrap(f"{left}{self.ws() or ' '}{op}{self.ws() or ' '}{right}")

    def gen(self, kind: str, depth: int) -> str:
        rnd = self.rnd
        if rnd.random() < 0.08:
            kind = rnd.choice(KINDS)  # a type error, on purpose
        if depth <= 0 or rnd.random() < 0.25:
            return self.leaf(kind)
        sub = depth - 1
        if rnd.random() < 0.06:  # unparenthesised, a ternary in the middle is a syntax error
            return self.wrap(f"{self.gen('bool', sub)} ? {self.gen(kind, sub)} : {self.gen(kind, sub)}")
        return getattr(self, f"gen_{kind}")(sub)

    def leaf(self, kind: str) -> str:
        rnd = self.rnd
        options = {
            "bool": ["true", "false", "args.flag", "args.n == null"],
            "int": [str(rnd.choice([0, 1, 2, 3, 7, 50, 500, 2**31, 2**53 + 1, 2**62, 2**63 - 1])),
                    "args.count", "args.big", "session.tool_calls", "llm.max_tokens", "args.meta.level"],
            "double": [rnd.choice(["0.0", "1.5", "0.25", "2.5e3", "1e-3", "50.0", "1E2", "9007199254740992.0"]),
                       "args.ratio", "args.amount_usd", "session.cost"],
            "string": [rnd.choice(["''", '""', "'a'", '"eu"', "'x@example.com'", "'it\\'s'", '"a\\"b"',
                                   "'\\n'", "'é'", '"gold"', "'tool_call'"]),
                       "args.to", "args.reason", "tool.name", "stage", "agent.labels.tier", "content"],
            "list": ["[]", "args.tags", "args.recipients", "[1, 2]", "['a', 'b']"],
            "map": ["agent.labels", "args.meta", "args", "tool"],
        }[kind]
        return rnd.choice(options)

    def gen_bool(self, d: int) -> str:
        rnd = self.rnd
        r = rnd.random()
        if r < 0.14:
            return self.binary(self.gen("bool", d), "&&", self.gen("bool", d))
        if r < 0.28:
            return self.binary(self.gen("bool", d), "||", self.gen("bool", d))
        if r < 0.36:
            return "!" + self.paren_unary(self.gen("bool", d))
        if r < 0.56:
            kind = rnd.choice(KINDS)
            return self.binary(self.gen(kind, d), rnd.choice(["==", "!="]), self.gen(kind, d))
        if r < 0.72:
            kind = rnd.choice(["int", "double", "string", "int", "double"])
            other = kind if rnd.random() < 0.7 else rnd.choice(["int", "double"])
            return self.binary(self.gen(kind, d), rnd.choice(["<", "<=", ">", ">="]), self.gen(other, d))
        if r < 0.82:
            if rnd.random() < 0.5:
                return self.binary(self.gen(rnd.choice(KINDS), d), "in", self.gen("list", d))
            return self.binary(self.gen("string", d), "in", self.gen("map", d))
        if r < 0.88:
            return f"has({self.path(d)}.{rnd.choice(['tier', 'owner', 'level', 'x', 'count'])})"
        return (f"{self.member_target(self.gen('string', d))}."
                f"{rnd.choice(['startsWith', 'endsWith', 'contains'])}({self.gen('string', d)})")

    def path(self, d: int) -> str:
        return self.rnd.choice(["args", "args.meta", "agent.labels", "tool", "args.meta.nested", "content"])

    def member_target(self, text: str) -> str:
        # a receiver must be a primary/member expression: parenthesise anything else
        simple = all(c.isalnum() or c in "._" for c in text) or text[0] in "'\"(["
        return text if simple and not text.lstrip("-").isdigit() else f"({text})"

    def paren_unary(self, text: str) -> str:
        return text if all(c.isalnum() or c in "._" for c in text) else f"({text})"

    def gen_int(self, d: int) -> str:
        rnd = self.rnd
        r = rnd.random()
        if r < 0.45:
            return self.binary(self.gen("int", d), rnd.choice(["+", "-", "*"]), self.gen("int", d))
        if r < 0.6:
            return "-" + self.paren_unary(self.gen("int", d))
        if r < 0.8:
            kind = rnd.choice(["string", "list", "map"])
            if rnd.random() < 0.5:
                return f"size({self.gen(kind, d)})"
            return f"{self.member_target(self.gen(kind, d))}.size()"
        return f"{self.member_target(self.gen('list', d))}[{self.gen('int', d)}]"

    def gen_double(self, d: int) -> str:
        rnd = self.rnd
        if rnd.random() < 0.75:
            return self.binary(self.gen("double", d), rnd.choice(["+", "-", "*"]), self.gen("double", d))
        return "-" + self.paren_unary(self.gen("double", d))

    def gen_string(self, d: int) -> str:
        rnd = self.rnd
        r = rnd.random()
        if r < 0.5:
            return self.binary(self.gen("string", d), "+", self.gen("string", d))
        if r < 0.75:
            return f"{self.member_target(self.gen('map', d))}[{self.gen('string', d)}]"
        return f"{self.member_target(self.gen('list', d))}[{self.gen('int', d)}]"

    def gen_list(self, d: int) -> str:
        rnd = self.rnd
        if rnd.random() < 0.5:
            return self.binary(self.gen("list", d), "+", self.gen("list", d))
        kind = rnd.choice(KINDS)
        items = ", ".join(self.gen(kind, d) for _ in range(rnd.randint(0, 3)))
        return f"[{items}]"

    def gen_map(self, d: int) -> str:
        rnd = self.rnd
        return f"{self.member_target(self.gen('map', d))}.{rnd.choice(['meta', 'labels', 'nested', 'x'])}"


def fuzz_variables(rnd: random.Random) -> dict[str, Any]:
    variables = typed_variables(rnd) if rnd.random() < 0.6 else chaotic_variables(rnd)
    if isinstance(variables.get("args"), dict) and rnd.random() < 0.7:
        variables["args"]["n"] = None
    return variables


def test_random_expressions_against_real_cel() -> None:
    rnd = random.Random(7)
    gen = ExprGen(rnd)
    var_sets = [fuzz_variables(rnd) for _ in range(24)]
    stats = Stats()
    accepted = compiled = 0
    n = 3000
    for _ in range(n):
        src = gen.gen("bool", rnd.randint(1, 4))
        fn = compile_fast(src)
        try:
            program = cel.compile(src)
        except Exception:
            assert fn is None, f"accepted what CEL does not compile: {src!r}"
            continue
        compiled += 1
        if fn is None:
            continue
        accepted += 1
        for variables in rnd.sample(var_sets, 3):
            stats.check(src, program, fn, variables)
    print(stats.report("random expressions") + f"; {n} generated, {compiled} compile with CEL, "
          f"{accepted} of those in the subset")
    assert not stats.disagreements, "\n".join(stats.disagreements[:20])
    assert compiled >= 0.9 * n
    assert accepted >= 0.97 * compiled
    assert stats.fast_ok >= 0.6 * stats.cel_ok


MUTATION_CHARS = [*"()[].,!-+*<>=&|?:'\"\\ 0123456789eEu_xn", "&&", "||", "==", " in ", "size(", ".size()"]


def mutate(rnd: random.Random, src: str) -> str:
    for _ in range(rnd.randint(1, 3)):
        i = rnd.randint(0, len(src))
        r = rnd.random()
        if r < 0.4 and src:
            src = src[:i] + src[i + 1:]
        elif r < 0.8:
            src = src[:i] + rnd.choice(MUTATION_CHARS) + src[i:]
        else:
            j = rnd.randint(0, len(src))
            src = src[:i] + src[min(i, j):max(i, j)] + src[i:]
    return src


def test_mutated_sources() -> None:
    """Character-level mutations of the corpus, to shake the tokenizer: whatever compile_fast
    accepts must compile with CEL and agree with it."""
    rnd = random.Random(11)
    var_sets = [fuzz_variables(rnd) for _ in range(12)]
    stats = Stats()
    accepted = 0
    for _ in range(2500):
        src = mutate(rnd, rnd.choice(CORPUS))
        fn = compile_fast(src)
        if fn is None:
            continue
        accepted += 1
        try:
            program = cel.compile(src)
        except Exception:
            pytest.fail(f"accepted what CEL does not compile: {src!r}")
        for variables in rnd.sample(var_sets, 2):
            stats.check(src, program, fn, variables)
    print(stats.report("mutated sources") + f"; {accepted} mutants accepted")
    assert not stats.disagreements, "\n".join(stats.disagreements[:20])
    assert accepted > 300


# --------------------------------------------------------------------------------------------
# 3. Outside the subset: None, so the caller uses real CEL

UNSUPPORTED = [
    # macros
    "args.tags.all(t, t != '')",
    "args.tags.exists(t, t == 'a')",
    "args.tags.exists_one(t, t == 'a')",
    "args.tags.map(t, t + 'x') == []",
    "args.tags.filter(t, t == 'a') == []",
    # other functions
    "args.to.matches('^a.*')",
    "timestamp('2024-01-01T00:00:00Z') < timestamp('2025-01-01T00:00:00Z')",
    "duration('1s') > duration('0s')",
    "string(args.count) == '1'",
    "int(args.ratio) == 1",
    "double(args.count) == 1.0",
    "uint(args.count) == 1u",
    "type(args) == map",
    "dyn(args.count) == 1",
    "args.to.lowerAscii() == 'a'",
    "args.count.size() == 1 && args.to.foo()",
    "size() == 0",
    "size(args.tags, 1) == 0",
    "args.to.startsWith() || true",
    "args.to.startsWith('a', 'b')",
    "args.tags.size(1) == 0",
    "has(args)",
    "has(args['x'])",
    "has(args.x, args.y)",
    "has(args.x.size())",
    # operators and syntax
    "args.count / 2 > 1",
    "args.count % 2 == 0",
    "{'a': 1} == args.meta",
    "args.?x == 1",
    "args[?'x'] == 1",
    "args.count = 1",
    "args.count == 1 & true",
    "args.count == 1 | true",
    "-!args.flag",
    "!-args.count",
    "args.flag ? args.flag ? true : false : false",
    ".args.count == 1",
    "args.in == 1",
    "args.true == 1",
    "args.if == 1",
    "[,] == []",
    "[1,,2] == []",
    "args..count == 1",
    "args.count == 1 // a comment",
    "args.count == 1 /* comment */",
    # literals
    "args.count == 1u",
    "args.count == 0x10",
    "args.count == 010",
    "args.count == 9223372036854775808",
    "args.count == -9223372036854775808",
    "args.ratio == 1e400",
    "args.ratio == 1.",
    "args.ratio == .5",
    "r'abc' == args.to",
    "R'abc' == args.to",
    "b'abc' == args.to",
    "'''abc''' == args.to",
    '"""abc""" == args.to',
    "'\\x41' == args.to",
    "'\\u00e9' == args.to",
    "'\\101' == args.to",
    "'\\r' == args.to",
    "'\\a' == args.to",
    "'\\?' == args.to",
    "'a\nb' == args.to",
    "'unterminated == args.to",
    # identifiers
    "unknown == 1",
    "x.y == 1",
    "args(1) == 1",
    "size == 1",
    "Args.count == 1",
    "argsx.count == 1",
    "args.count == 1 && ns.x",
    "args.cöunt == 1",
    "args.count\v== 1",
    "'\ud800' == args.to",
    "(" * 60 + "true" + ")" * 60,
    "args.count == 1 1",
    "",
]


@pytest.mark.parametrize("src", UNSUPPORTED)
def test_unsupported_is_none(src: str) -> None:
    assert compile_fast(src) is None


def test_constant_conditions() -> None:
    for src, expected in [("true", True), ("1 < 2", True), ("'a' + 'b' == 'ab'", True), ("[1] == []", False)]:
        fn = compile_fast(src)
        assert fn is not None and fn({}) is expected
    fn = compile_fast("1 + 'a' == 2")  # a constant error stays an error, at run time
    assert fn is not None
    with pytest.raises(Exception):  # noqa: B017 — any exception means "ask CEL"
        fn({})
    assert compile_fast("1 + 1") is None  # constant, not a bool

