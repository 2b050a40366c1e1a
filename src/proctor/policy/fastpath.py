"""A pure-Python fast path for simple CEL conditions, with real CEL as the fallback.

Why this exists. Running a compiled CEL program costs ~1 µs, but building the
``cel.Context`` it runs against costs far more: PyO3 converts every value handed to it,
~1.5–2 µs per string and ~3–4 µs per list or map element. A 100-rule decision measured
~36 µs p50 against a 20 µs target, almost all of it conversion. Most policy conditions are
simple (``args.amount_usd <= 50``, ``tool.name == "send_email"``, ``size(args.body) <= 4000``)
and evaluate in ~0.3–1.5 µs directly over the Python values, with nothing converted.

What it does. :func:`compile_fast` parses a small, safe subset of CEL (hand-written tokenizer
and recursive-descent parser following CEL's grammar and precedence) and builds one closure per
node, once. It returns None for anything outside the subset; the caller then uses real CEL.

The contract (a security component: correctness over coverage):

- When the closure *returns*, the result is exactly what real CEL returns for the same
  variables, and it is a Python bool.
- Whenever the closure is not sure — a type mix whose CEL semantics are not plainly the same as
  Python's, a missing key, an integer outside int64, a value of an unexpected Python type, a
  non-bool result — it *raises* (any exception). The caller then evaluates the condition with
  real CEL, which decides, errors included. Raising is always safe; a wrong value never is.

The subset and how it follows CEL (``common-expression-language`` 0.10, checked by
tests/test_policy_fastpath.py against the real thing):

- literals: decimal int (int64; no ``u``, no hex), double (``1.5``, ``1e3``), strings in single or
  double quotes with the escapes ``\\\\ \\' \\" \\n \\t`` only, ``true``, ``false``, ``null``,
  lists ``[a, b]``;
- the variables ``args tool agent session llm content stage``; ``x.f``; ``x[i]`` (list and int,
  or map and string; missing key or index out of range raises);
- ``!`` ``-`` (unary), ``*`` ``+`` ``-`` (int with int, with int64 overflow raising; double with
  double; ``+`` also string with string and list with list) — CEL never mixes int and double in
  arithmetic, and ``/`` ``%`` are left to CEL;
- ``< <= > >=`` on two ints, two strings, two doubles (a NaN raises: CEL has no ordering for it)
  or an int and a double when the int is exact as a double (|i| <= 2**53; CEL converts the int to
  a double, so beyond that the fast path raises); bools raise;
- ``== !=``: CEL's heterogeneous equality — different kinds are unequal, a bool is never a number,
  ints and doubles compare numerically (same 2**53 rule), lists and maps element by element;
- ``in`` (element of a list by ``==``; string key of a map), ``&&`` ``||`` with short-circuit and
  CEL's error absorption (``error && false`` is false, ``error || true`` is true; a non-bool
  operand counts as an error), ``c ? a : b``;
- ``size(x)``/``x.size()`` (list, map, ASCII string — this CEL counts a string's UTF-8 *bytes*
  where the spec says code points, so a non-ASCII string raises rather than pick either),
  ``has(x.f)``, ``x.startsWith(s)``, ``x.endsWith(s)``, ``x.contains(s)`` (strings).

Precondition: ``variables`` holds what CEL would be given (the same top-level names and values —
e.g. a missing map normalised to ``{}`` the same way), made of data CEL can convert. Values the
closure reads are checked (exact types, int64 range, encodable strings) and anything else makes
it raise; but the contents of a container it only measures (``size``, a length mismatch in
``==``) are not read, so a value CEL could not convert at all (a set, an object) deep inside such
a container — where CEL fails the whole evaluation — is the caller's to exclude, e.g. with
:func:`is_plain` when the data did not come from JSON.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["VARIABLES", "Undecided", "compile_fast", "is_plain"]

#: The top-level variables a condition may use (as in :mod:`proctor.policy.cel`).
VARIABLES: frozenset[str] = frozenset({"args", "tool", "agent", "session", "llm", "content", "stage"})

Fn = Callable[[Mapping[str, Any]], Any]
Predicate = Callable[[Mapping[str, Any]], bool]

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_EXACT = 2**53  # ints up to this magnitude are exact as doubles
_MAX_DEPTH = 40  # parser nesting limit: deeper expressions are left to CEL
_NoneType = type(None)
_PLAIN_NOT_INT_STR = frozenset({float, bool, _NoneType, list, dict})

# CEL reserved words: never a field name or method here (real CEL accepts some, e.g. args.if).
_RESERVED = frozenset({
    "as", "break", "const", "continue", "else", "false", "for", "function", "if", "import", "in",
    "let", "loop", "package", "namespace", "null", "return", "true", "var", "void", "while",
})
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_WHITESPACE = frozenset(" \t\n\r\f")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_DIGITS = frozenset("0123456789")
_IDENT_CHARS = _IDENT_START | _DIGITS
_TWO_CHAR = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_ONE_CHAR = frozenset("<>!+-*()[].,?:")
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})


class Undecided(Exception):
    """Raised by a fast closure when it cannot be sure of CEL's answer: re-evaluate with CEL."""


class _Unsupported(Exception):
    """The source is outside the subset (compile time): compile_fast returns None."""


def compile_fast(source: str, variables: frozenset[str] = VARIABLES) -> Predicate | None:
    """A closure evaluating the CEL condition ``source`` over a variables mapping, or None when
    ``source`` is outside the supported subset (the caller then uses real CEL). ``variables``:
    the names a condition may read (the policy's by default; alert rules have their own).

    The closure returns exactly what CEL would (always a bool) or raises; on any exception the
    caller must fall back to real CEL, which then decides — including whether it is an error.
    """
    try:
        source.encode("utf-8")  # a lone surrogate: CEL cannot take the source at all
        parser = _Parser(_tokenize(source), variables)
        tree = parser.parse()
        fn, const = _compile(tree)
    except _Unsupported:
        return None
    except Exception:  # RecursionError, UnicodeError; a bug here must only cost speed
        return None
    if const is not _NOT_CONST:
        if const is True or const is False:
            value: bool = const
            return lambda variables: value
        return None  # a constant that is not a bool (or a constant error): leave it to CEL
    if _always_bool(tree):
        return fn  # these nodes only ever return a bool (or raise)
    return _ensure_bool(fn)


def is_plain(value: Any, _depth: int = 0) -> bool:
    """Whether ``value`` is plain data that CEL takes as the fast path sees it: dicts with string
    keys, lists, strings (valid Unicode), int64 ints, floats, bools and None, all the way down.

    The fast path checks every value it reads; this is for a caller that cannot vouch for the
    contents of containers a condition only measures (``size(args.items)``) — e.g. arguments
    from an SDK call rather than from JSON. O(size of ``value``).
    """
    t = type(value)
    if t is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeError:
                return False
        return True
    if t is int:
        return _INT_MIN <= value <= _INT_MAX
    if t is float or t is bool or value is None:
        return True
    if _depth > 64:
        return False
    if t is list:
        return all(is_plain(x, _depth + 1) for x in value)
    if t is dict:
        return all(type(k) is str and is_plain(k) and is_plain(x, _depth + 1) for k, x in value.items())
    return False


def _ensure_bool(fn: Fn) -> Predicate:
    def check(variables: Mapping[str, Any]) -> bool:
        result = fn(variables)
        if result is True or result is False:
            return result
        raise Undecided(f"condition value is {type(result).__name__}, not a bool")
    return check


# --------------------------------------------------------------------------------------------
# Tokenizer

Token = tuple[str, Any]  # (kind, value): kind in "lit", "ident", "op", "eof"


def _tokenize(src: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in _WHITESPACE:
            i += 1
        elif c in _IDENT_START:
            j = i + 1
            while j < n and src[j] in _IDENT_CHARS:
                j += 1
            word = src[i:j]
            if j < n and src[j] in "'\"":
                raise _Unsupported("prefixed (raw or bytes) string")
            if word == "true":
                tokens.append(("lit", True))
            elif word == "false":
                tokens.append(("lit", False))
            elif word == "null":
                tokens.append(("lit", None))
            elif word == "in":
                tokens.append(("op", "in"))
            elif word in _RESERVED:
                raise _Unsupported(f"reserved word {word!r}")
            else:
                tokens.append(("ident", word))
            i = j
        elif c in _DIGITS:
            i = _number(src, i, tokens)
        elif c in "'\"":
            i = _string(src, i, tokens)
        elif src.startswith(("?.", "[?"), i):
            raise _Unsupported("optional syntax")
        elif c == "." and i + 1 < n and src[i + 1] in _DIGITS:
            raise _Unsupported("number starting with '.'")
        elif src[i:i + 2] in _TWO_CHAR:
            tokens.append(("op", src[i:i + 2]))
            i += 2
        elif c in _ONE_CHAR:
            tokens.append(("op", c))
            i += 1
        else:  # / % { } = & | comments, non-ASCII outside strings, \v ...
            raise _Unsupported(f"character {c!r}")
    tokens.append(("eof", None))
    return tokens


def _number(src: str, i: int, tokens: list[Token]) -> int:
    n = len(src)
    j = i
    while j < n and src[j] in _DIGITS:
        j += 1
    digits_end = j
    is_float = False
    if j + 1 < n and src[j] == "." and src[j + 1] in _DIGITS:
        j += 1
        while j < n and src[j] in _DIGITS:
            j += 1
        is_float = True
    if j < n and src[j] in "eE":
        k = j + 1
        if k < n and src[k] in "+-":
            k += 1
        if k < n and src[k] in _DIGITS:
            while k < n and src[k] in _DIGITS:
                k += 1
            j = k
            is_float = True
    if j < n and (src[j] in _IDENT_CHARS or (src[j] == "." and j + 1 < n and src[j + 1] in _DIGITS)):
        raise _Unsupported("number suffix (u, hex, ...)")
    if digits_end - i > 1 and src[i] == "0":
        raise _Unsupported("leading zero")
    text = src[i:j]
    if j - i > 400:
        raise _Unsupported("number literal too long")
    if is_float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise _Unsupported("double literal out of range")
        tokens.append(("lit", value))
    else:
        ivalue = int(text)
        if ivalue > _INT_MAX:  # even -9223372036854775808: left to CEL
            raise _Unsupported("int literal out of range")
        tokens.append(("lit", ivalue))
    return j


def _string(src: str, i: int, tokens: list[Token]) -> int:
    quote = src[i]
    if src.startswith(quote * 3, i):
        raise _Unsupported("triple-quoted string")
    out: list[str] = []
    j, n = i + 1, len(src)
    while True:
        if j >= n:
            raise _Unsupported("unterminated string")
        c = src[j]
        if c == quote:
            break
        if c in "\r\n":
            raise _Unsupported("newline in string")
        if c == "\\":
            esc = _ESCAPES.get(src[j + 1] if j + 1 < n else "")
            if esc is None:
                raise _Unsupported("escape sequence")
            out.append(esc)
            j += 2
            continue
        out.append(c)
        j += 1
    tokens.append(("lit", "".join(out)))
    return j + 1


# --------------------------------------------------------------------------------------------
# Parser: CEL's grammar, restricted.
#
#   expr     = or ["?" or ":" expr]
#   or       = and {"||" and}
#   and      = relation {"&&" relation}
#   relation = calc {("<"|"<="|">="|">"|"=="|"!="|"in") calc}
#   calc     = mul {("+"|"-") mul}
#   mul      = unary {"*" unary}                 ("/" and "%" are not in the subset)
#   unary    = "!"{"!"} member | "-"{"-"} member | member
#   member   = primary {"." IDENT ["(" args ")"] | "[" expr "]"}
#   primary  = IDENT | IDENT "(" args ")" | "(" expr ")" | "[" [expr {"," expr} [","]] "]" | literal
#
# Nodes are tuples: ("lit", v) ("list", items) ("var", name) ("field", obj, name)
# ("index", obj, key) ("call", name, target | None, args) ("not", x) ("neg", x)
# ("arith", op, l, r) ("rel", op, l, r) ("and", l, r) ("or", l, r) ("cond", c, a, b)

Node = tuple[Any, ...]
_MAX_TOKENS = 2000


def _always_bool(node: Node) -> bool:
    """Whether a node's closure can only return a bool (or raise)."""
    if node[0] in ("rel", "not", "and", "or"):
        return True
    return node[0] == "call" and node[1] in ("has", "startsWith", "endsWith", "contains")


class _Parser:
    def __init__(self, tokens: list[Token], variables: frozenset[str] = VARIABLES) -> None:
        if len(tokens) > _MAX_TOKENS:
            raise _Unsupported("expression too long")
        self.variables = variables
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def accept(self, op: str) -> bool:
        if self.tokens[self.pos] == ("op", op):
            self.pos += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise _Unsupported(f"expected {op!r}")

    def parse(self) -> Node:
        node = self.expr()
        if self.peek()[0] != "eof":
            raise _Unsupported("trailing input")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Unsupported("nesting too deep")
        node = self.or_()
        if self.accept("?"):
            then = self.or_()
            self.expect(":")
            node = ("cond", node, then, self.expr())
        self.depth -= 1
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.accept("||"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.relation()
        while self.accept("&&"):
            node = ("and", node, self.relation())
        return node

    def relation(self) -> Node:
        node = self.calc()
        while True:
            kind, value = self.peek()
            if kind != "op" or value not in _RELATIONS:
                return node
            self.pos += 1
            node = ("rel", value, node, self.calc())

    def calc(self) -> Node:
        node = self.mul()
        while True:
            if self.accept("+"):
                node = ("arith", "+", node, self.mul())
            elif self.accept("-"):
                node = ("arith", "-", node, self.mul())
            else:
                return node

    def mul(self) -> Node:
        node = self.unary()
        while self.accept("*"):
            node = ("arith", "*", node, self.unary())
        return node

    def unary(self) -> Node:
        for op, kind, other in (("!", "not", "-"), ("-", "neg", "!")):
            count = 0
            while self.accept(op):
                count += 1
            if count:
                if self.peek() == ("op", other):
                    raise _Unsupported("mixed unary operators")
                node = self.member()
                for _ in range(count):
                    node = (kind, node)
                return node
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                kind, name = self.take()
                if kind != "ident":
                    raise _Unsupported("field name expected")
                node = ("call", name, node, self.arguments()) if self.accept("(") else ("field", node, name)
            elif self.accept("["):
                node = ("index", node, self.expr())
                self.expect("]")
            else:
                return node

    def arguments(self) -> list[Node]:
        args: list[Node] = []
        if self.accept(")"):
            return args
        while True:
            args.append(self.expr())
            if self.accept(")"):
                return args
            self.expect(",")

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "ident":
            if self.accept("("):
                return ("call", value, None, self.arguments())
            if value not in self.variables:
                raise _Unsupported(f"unknown identifier {value!r}")
            return ("var", value)
        if (kind, value) == ("op", "("):
            node = self.expr()
            self.expect(")")
            return node
        if (kind, value) == ("op", "["):
            items: list[Node] = []
            if self.accept("]"):
                return ("list", items)
            while True:
                items.append(self.expr())
                if self.accept("]"):
                    return ("list", items)
                self.expect(",")
                if self.accept("]"):
                    return ("list", items)
        raise _Unsupported(f"unexpected {value!r}")


# --------------------------------------------------------------------------------------------
# Run-time checks shared by the closures


def _value(x: Any) -> Any:
    """``x`` read from the variables, if CEL would see the same value; else raise."""
    t = type(x)
    if t is int:
        if _INT_MIN <= x <= _INT_MAX:
            return x
        raise Undecided("int outside int64 (CEL makes it a uint or a double)")
    if t is str:
        if not x.isascii():
            x.encode("utf-8")  # a lone surrogate raises: CEL could not take this string
        return x
    if t in _PLAIN_NOT_INT_STR:
        return x
    raise Undecided(f"value of type {t.__name__}")


def _eq(a: Any, b: Any) -> bool:
    """CEL's ``==`` (heterogeneous: different kinds are unequal; ints and doubles numerically)."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is str or ta is float or ta is bool:
            return bool(a == b)
        if ta is int:
            _value(a)
            _value(b)
            return bool(a == b)
        if ta is _NoneType:
            return True
        if ta is list:
            if len(a) != len(b):
                return False
            return all(_eq(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            if len(a) != len(b):
                return False
            for k, x in a.items():
                if type(k) is not str:  # CEL makes bool keys ints: {true: 1} == {1: 1}
                    raise Undecided("map with a non-string key")
                if k not in b or not _eq(x, b[k]):
                    return False
            return True
        raise Undecided(f"value of type {ta.__name__}")
    if ta is int:
        _value(a)
        if tb is float:
            return _int_float_eq(a, b)
        _value(b)
        return False
    if tb is int:
        _value(b)
        if ta is float:
            return _int_float_eq(b, a)
        _value(a)
        return False
    _value(a)
    _value(b)
    return False


def _int_float_eq(i: int, f: float) -> bool:
    if -_EXACT <= i <= _EXACT:
        return bool(i == f)
    raise Undecided("int compared with a double beyond 2**53")


def _check_order(a: Any, b: Any) -> None:
    """Raise unless ``a < b`` means the same in Python as in CEL."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is int or ta is str:
            return
        if ta is float and a == a and b == b:
            return
    elif ta is int and tb is float:
        if -_EXACT <= a <= _EXACT and b == b:
            return
    elif ta is float and tb is int and -_EXACT <= b <= _EXACT and a == a:
        return
    raise Undecided(f"ordering {ta.__name__} and {tb.__name__}")


def _int_result(r: int) -> int:
    if _INT_MIN <= r <= _INT_MAX:
        return r
    raise Undecided("int64 overflow")


def _in(a: Any, b: Any) -> bool:
    tb = type(b)
    if tb is list:
        return any(_eq(a, e) for e in b)
    if tb is dict and type(a) is str:
        return a in b
    raise Undecided(f"'in' over {tb.__name__}")


def _size(x: Any) -> int:
    t = type(x)
    if t is str:
        if x.isascii():
            return len(x)
        raise Undecided("size of a non-ASCII string (this CEL counts UTF-8 bytes)")
    if t is list or t is dict:
        return len(x)
    raise Undecided(f"size of {t.__name__}")


# --------------------------------------------------------------------------------------------
# Compiler: node -> closure. Each returns (closure, constant or _NOT_CONST).

_NOT_CONST: Any = object()
Compiled = tuple[Fn, Any]


def _compile(node: Node) -> Compiled:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return (lambda v: value), value
    if kind == "var" or (kind == "field" and _path(node) is not None):
        path = _path(node)
        assert path is not None
        return _path_fn(path[0], path[1:]), _NOT_CONST
    children: list[Compiled]
    if kind == "list":
        children = [_compile(item) for item in node[1]]
        fn = _list_fn([f for f, _ in children])
    elif kind == "field":
        children = [_compile(node[1])]
        fn = _field_fn(children[0][0], node[2])
    elif kind == "index":
        children = [_compile(node[1]), _compile(node[2])]
        fn = _index_fn(children[0][0], children[1][0])
    elif kind == "not":
        children = [_compile(node[1])]
        fn = _not_fn(children[0][0])
    elif kind == "neg":
        children = [_compile(node[1])]
        fn = _neg_fn(children[0][0])
    elif kind == "arith":
        children = [_compile(node[2]), _compile(node[3])]
        fn = _ARITH[node[1]](children[0][0], children[1][0])
    elif kind == "rel":
        children = [_compile(node[2]), _compile(node[3])]
        fn = _rel_fn(node[1], children[0], children[1])
    elif kind == "and" or kind == "or":
        children = [_compile(node[1]), _compile(node[2])]
        fn = _logic_fn(kind == "and", children[0][0], children[1][0])
    elif kind == "cond":
        children = [_compile(node[1]), _compile(node[2]), _compile(node[3])]
        fn = _cond_fn(children[0][0], children[1][0], children[2][0])
    elif kind == "call":
        return _compile_call(node)
    else:  # pragma: no cover - the parser makes no other node
        raise _Unsupported(kind)
    return _fold(fn, children)


def _fold(fn: Fn, children: list[Compiled]) -> Compiled:
    """Evaluate a node whose operands are all constants once, now (if it raises, it raises at
    run time too: the node is kept as is)."""
    if all(c is not _NOT_CONST for _, c in children):
        try:
            value = fn({})
        except Exception:
            return fn, _NOT_CONST
        return (lambda v: value), value
    return fn, _NOT_CONST


def _path(node: Node) -> list[str] | None:
    """``args.a.b`` as ["args", "a", "b"]; None when the chain does not start at a variable."""
    names: list[str] = []
    while node[0] == "field":
        names.append(node[2])
        node = node[1]
    if node[0] != "var":
        return None
    names.append(node[1])
    names.reverse()
    return names


def _path_fn(var: str, fields: list[str]) -> Fn:
    if not fields:
        def read_var(v: Mapping[str, Any]) -> Any:
            return _value(v[var])
        return read_var
    if len(fields) == 1:
        name = fields[0]

        def read_field(v: Mapping[str, Any]) -> Any:
            obj = v[var]
            if type(obj) is not dict:
                raise Undecided(f"field {name!r} of a {type(obj).__name__}")
            x = obj[name]
            t = type(x)
            if t is int:
                if _INT_MIN <= x <= _INT_MAX:
                    return x
            elif t is str:
                if x.isascii():
                    return x
            elif t in _PLAIN_NOT_INT_STR:
                return x
            return _value(x)
        return read_field
    names = tuple(fields)

    def read_path(v: Mapping[str, Any]) -> Any:
        obj = v[var]
        for name in names:
            if type(obj) is not dict:
                raise Undecided(f"field {name!r} of a {type(obj).__name__}")
            obj = obj[name]
        return _value(obj)
    return read_path


def _list_fn(items: list[Fn]) -> Fn:
    def make_list(v: Mapping[str, Any]) -> Any:
        return [f(v) for f in items]
    return make_list


def _field_fn(obj_fn: Fn, name: str) -> Fn:
    def field(v: Mapping[str, Any]) -> Any:
        obj = obj_fn(v)
        if type(obj) is not dict:
            raise Undecided(f"field {name!r} of a {type(obj).__name__}")
        return _value(obj[name])
    return field


def _index_fn(obj_fn: Fn, key_fn: Fn) -> Fn:
    def index(v: Mapping[str, Any]) -> Any:
        obj = obj_fn(v)
        key = key_fn(v)
        t = type(obj)
        if t is list and type(key) is int:
            if 0 <= key < len(obj):
                return _value(obj[key])
            raise IndexError(f"index out of bounds: {key}")
        if t is dict and type(key) is str:
            return _value(obj[key])
        raise Undecided(f"{t.__name__}[{type(key).__name__}]")
    return index


def _not_fn(fn: Fn) -> Fn:
    def not_(v: Mapping[str, Any]) -> Any:
        x = fn(v)
        if x is True:
            return False
        if x is False:
            return True
        raise Undecided(f"!{type(x).__name__}")
    return not_


def _neg_fn(fn: Fn) -> Fn:
    def neg(v: Mapping[str, Any]) -> Any:
        x = fn(v)
        t = type(x)
        if t is int:
            return _int_result(-x)
        if t is float:
            return -x
        raise Undecided(f"-{t.__name__}")
    return neg


def _add_fn(lf: Fn, rf: Fn) -> Fn:
    def add(v: Mapping[str, Any]) -> Any:
        a = lf(v)
        b = rf(v)
        t = type(a)
        if t is type(b):
            if t is int:
                r = a + b
                if _INT_MIN <= r <= _INT_MAX:
                    return r
                raise Undecided("int64 overflow")
            if t is float or t is str or t is list:
                return a + b
        raise Undecided(f"{t.__name__} + {type(b).__name__}")
    return add


def _numeric_fn(op: Callable[[Any, Any], Any], symbol: str) -> Callable[[Fn, Fn], Fn]:
    def make(lf: Fn, rf: Fn) -> Fn:
        def arith(v: Mapping[str, Any]) -> Any:
            a = lf(v)
            b = rf(v)
            t = type(a)
            if t is type(b):
                if t is int:
                    r = op(a, b)
                    if _INT_MIN <= r <= _INT_MAX:
                        return r
                    raise Undecided("int64 overflow")
                if t is float:
                    return op(a, b)
            raise Undecided(f"{t.__name__} {symbol} {type(b).__name__}")
        return arith
    return make


_ARITH: dict[str, Callable[[Fn, Fn], Fn]] = {
    "+": _add_fn,
    "-": _numeric_fn(operator.sub, "-"),
    "*": _numeric_fn(operator.mul, "*"),
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _rel_fn(op: str, left: Compiled, right: Compiled) -> Fn:
    lf, _ = left
    rf, rc = right
    if op == "==" or op == "!=":
        return _eq_fn(op == "==", lf, rf, rc)
    if op == "in":
        return _in_fn(lf, rf, rc)
    return _order_fn(_ORDER[op], lf, rf, rc)


def _eq_fn(positive: bool, lf: Fn, rf: Fn, rc: Any) -> Fn:
    rt = type(rc)
    if rc is not _NOT_CONST and rt in (str, int, bool):  # x == "literal": the usual case
        if positive:
            def eq_const(v: Mapping[str, Any]) -> bool:
                a = lf(v)
                if type(a) is rt:
                    return bool(a == rc)
                return _eq(a, rc)
            return eq_const

        def ne_const(v: Mapping[str, Any]) -> bool:
            a = lf(v)
            if type(a) is rt:
                return bool(a != rc)
            return not _eq(a, rc)
        return ne_const
    if positive:
        def eq(v: Mapping[str, Any]) -> bool:
            a = lf(v)
            b = rf(v)
            t = type(a)
            if t is type(b) and (t is str or t is int or t is bool):
                return bool(a == b)
            return _eq(a, b)
        return eq

    def ne(v: Mapping[str, Any]) -> bool:
        a = lf(v)
        b = rf(v)
        t = type(a)
        if t is type(b) and (t is str or t is int or t is bool):
            return bool(a != b)
        return not _eq(a, b)
    return ne


def _in_fn(lf: Fn, rf: Fn, rc: Any) -> Fn:
    if type(rc) is list and rc and all(type(x) is str for x in rc):  # x in ["a", "b"]
        strings = frozenset(rc)
        items: list[Any] = rc

        def in_strings(v: Mapping[str, Any]) -> bool:
            a = lf(v)
            if type(a) is str:
                return a in strings
            return _in(a, items)
        return in_strings

    def in_(v: Mapping[str, Any]) -> bool:
        return _in(lf(v), rf(v))
    return in_


def _order_fn(op: Callable[[Any, Any], bool], lf: Fn, rf: Fn, rc: Any) -> Fn:
    if type(rc) is int or type(rc) is str:  # x <= 50: the usual case
        rt = type(rc)

        def order_const(v: Mapping[str, Any]) -> bool:
            a = lf(v)
            if type(a) is not rt:
                _check_order(a, rc)
            return op(a, rc)
        return order_const

    def order(v: Mapping[str, Any]) -> bool:
        a = lf(v)
        b = rf(v)
        t = type(a)
        if t is not type(b) or (t is not int and t is not str):
            _check_order(a, b)
        return op(a, b)
    return order


def _logic_fn(is_and: bool, lf: Fn, rf: Fn) -> Fn:
    """``&&`` / ``||`` as CEL runs them: the left operand decides alone when it is the absorbing
    value (false for &&, true for ||); an error or a non-bool on the left is absorbed when the
    right operand is that value, and is an error otherwise."""
    absorbing = not is_and
    neutral = is_and

    def logic(v: Mapping[str, Any]) -> bool:
        try:
            a = lf(v)
        except Exception:
            if rf(v) is absorbing:
                return absorbing
            raise
        if a is absorbing:
            return absorbing
        b = rf(v)
        if b is absorbing:
            return absorbing
        if a is not neutral or b is not neutral:
            raise Undecided(f"logical operands of type {type(a).__name__} and {type(b).__name__}")
        return neutral
    return logic


def _cond_fn(cf: Fn, tf: Fn, ef: Fn) -> Fn:
    def cond(v: Mapping[str, Any]) -> Any:
        c = cf(v)
        if c is True:
            return tf(v)
        if c is False:
            return ef(v)
        raise Undecided(f"condition of type {type(c).__name__}")
    return cond


def _compile_call(node: Node) -> Compiled:
    _, name, target, args = node
    if name == "has" and target is None:
        if len(args) != 1 or args[0][0] != "field":
            raise _Unsupported("has() takes a field selection")
        obj, field_name = _compile(args[0][1]), args[0][2]
        return _has_fn(obj[0], field_name), _NOT_CONST
    if name == "size" and ((target is None and len(args) == 1) or (target is not None and not args)):
        operand = _compile(args[0] if target is None else target)
        return _fold(_size_fn(operand[0]), [operand])
    if name in _STRING_FUNCTIONS and target is not None and len(args) == 1:
        children = [_compile(target), _compile(args[0])]
        return _fold(_strfn(_STRING_FUNCTIONS[name], name, children[0][0], children[1][0]), children)
    raise _Unsupported(f"function {name!r}")


def _has_fn(obj_fn: Fn, name: str) -> Fn:
    def has(v: Mapping[str, Any]) -> bool:
        obj = obj_fn(v)
        if type(obj) is not dict:
            raise Undecided(f"has() on a {type(obj).__name__}")
        if name not in obj:
            return False
        _value(obj[name])  # a value CEL could not take (a set, ...) fails there, even unread
        return True
    return has


def _size_fn(fn: Fn) -> Fn:
    def size(v: Mapping[str, Any]) -> int:
        return _size(fn(v))
    return size


_STRING_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": operator.contains,
}


def _strfn(method: Callable[[str, str], bool], name: str, target_fn: Fn, arg_fn: Fn) -> Fn:
    def string_function(v: Mapping[str, Any]) -> bool:
        s = target_fn(v)
        x = arg_fn(v)
        if type(s) is str and type(x) is str:
            return method(s, x)
        raise Undecided(f"{type(s).__name__}.{name}({type(x).__name__})")
    return string_function
