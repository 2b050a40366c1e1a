"""Loading policy bundles from YAML: validate, compile, hash — or refuse with file:line.

Every problem is reported, not just the first (in two rounds: schema problems, then — once
the document has the right shape — conditions and duplicate ids): a YAML syntax error, a schema violation
(checked with jsonschema against :data:`proctor.policy.schema.BUNDLE_SCHEMA`), a CEL
condition that does not compile, a duplicate rule id. Each names the file and the line of the
offending key, so an editor can jump to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from proctor.core.canonical import canonical_json, sha256_hex
from proctor.policy.cel import ConditionError, compile_condition
from proctor.policy.model import (
    SIDE_EFFECTS,
    BundleScope,
    Capability,
    Glob,
    PolicyBundle,
    Rule,
    ToolClass,
)
from proctor.policy.schema import BUNDLE_SCHEMA

_VALIDATOR = jsonschema.Draft202012Validator(BUNDLE_SCHEMA)

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int
    where: str  # dotted path in the document, e.g. spec.rules[2].when
    message: str

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        return f"{self.source}:{self.line}:{where} {self.message}"


class PolicyError(ValueError):
    """A bundle was refused. ``problems`` lists every reason with its file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _to_python(node: yaml.Node, path: Path_, lines: dict[Path_, int], dups: list[tuple[Path_, int, int]]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalar(key_node)) if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            if key in out:
                # PyYAML keeps the last of two equal keys without a word: a second `rules:` block
                # would silently drop the first one's rules.
                dups.append(((*path, key), key_node.start_mark.line + 1, lines[(*path, key)]))
            out[key] = _to_python(value_node, (*path, key), lines, dups)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, (*path, i), lines, dups) for i, v in enumerate(node.value)]
    # scalars: let PyYAML's resolver type them (ints, floats, bools, null)
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _line_of(lines: dict[Path_, int], path: Path_) -> int:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)


def _globs(value: Any) -> Glob:
    if value is None:
        return Glob(())
    if isinstance(value, str):
        return Glob((value,))
    return Glob(tuple(str(v) for v in value))


def parse_documents(text: str, source: str = "<string>") -> list[tuple[dict[str, Any], dict[Path_, int]]]:
    """YAML text -> [(document, line map)], or PolicyError naming the line of a syntax error."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PolicyError([Problem(source, line, "", f"invalid YAML: {e.problem or e}")]) from None
    docs = []
    dups: list[tuple[Path_, int, int]] = []
    for node in nodes:
        if node is None:
            continue
        lines: dict[Path_, int] = {}
        try:
            doc = _to_python(node, (), lines, dups)
        except yaml.YAMLError as e:
            raise PolicyError([Problem(source, node.start_mark.line + 1, "", f"invalid YAML: {e}")]) from None
        docs.append((doc, lines))
    if dups:
        raise PolicyError([
            Problem(source, line, _dotted(path), f"duplicate key {path[-1]!r} (first at line {first})")
            for path, line, first in dups
        ])
    if not docs:
        raise PolicyError([Problem(source, 1, "", "empty file: expected a PolicyBundle document")])
    return docs


def load_bundle_text(text: str, source: str = "<string>") -> list[PolicyBundle]:
    """Parse, validate and compile every bundle in a YAML text. All or nothing."""
    bundles: list[PolicyBundle] = []
    problems: list[Problem] = []
    for doc, lines in parse_documents(text, source):
        try:
            bundles.append(_build(doc, lines, source))
        except PolicyError as e:
            problems.extend(e.problems)
    if problems:
        raise PolicyError(problems)
    return bundles


def read_text(path: str | Path) -> str:
    """A policy or cases file's text, or PolicyError naming the file when it cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError([Problem(str(p), 1, "", f"cannot read: {e.strerror or e}")]) from None
    except UnicodeDecodeError as e:
        raise PolicyError([Problem(str(p), 1, "", f"not UTF-8 text: {e}")]) from None


def load_bundle_file(path: str | Path) -> list[PolicyBundle]:
    return load_bundle_text(read_text(path), str(path))


def is_cases_file(path: Path) -> bool:
    """``*.cases.yaml``: test cases for ``proctor policy test``, kept next to the bundles they test."""
    return path.name.endswith((".cases.yaml", ".cases.yml"))


def bundle_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named by ``paths``: files as given, directories expanded to their *.yaml/*.yml
    (except test case files, ``*.cases.yaml``)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir()
                              if q.suffix in (".yaml", ".yml") and q.is_file() and not is_cases_file(q)))
        else:
            out.append(p)
    return out


def load_bundles(paths: Iterable[str | Path]) -> list[PolicyBundle]:
    """Load every bundle from files and directories; refuse all if any is invalid."""
    bundles: list[PolicyBundle] = []
    problems: list[Problem] = []
    files = bundle_files(paths)
    for f in files:
        try:
            bundles.extend(load_bundle_file(f))
        except PolicyError as e:
            problems.extend(e.problems)
    seen: dict[str, str] = {}
    for b in bundles:
        if b.name in seen:
            problems.append(Problem(b.source, 1, "metadata.name", f"bundle {b.name!r} is also defined in {seen[b.name]}"))
        seen[b.name] = b.source
    if problems:
        raise PolicyError(problems)
    return bundles


def _build(doc: Any, lines: dict[Path_, int], source: str) -> PolicyBundle:
    problems: list[Problem] = []
    problems.extend(schema_problems(_VALIDATOR, doc, lines, source))
    if problems:
        raise PolicyError(problems)

    meta = doc["metadata"]
    spec = doc.get("spec") or {}
    bundle_mode = spec.get("mode", "enforce")
    default = spec.get("default_effect", "allow")
    if isinstance(default, str):
        default_effect = {se: default for se in SIDE_EFFECTS}
        default_effect["llm"] = "allow"
    else:
        default_effect = {se: default.get(se, "allow") for se in SIDE_EFFECTS}
        default_effect["llm"] = default.get("llm", "allow")

    rules: list[Rule] = []
    ids: dict[str, int] = {}
    for i, r in enumerate(spec.get("rules") or []):
        here: Path_ = ("spec", "rules", i)
        line = _line_of(lines, here)
        if r["id"] in ids:
            problems.append(
                Problem(source, _line_of(lines, (*here, "id")), _dotted((*here, "id")),
                        f"duplicate rule id {r['id']!r} (first at line {ids[r['id']]})")
            )
            continue
        ids[r["id"]] = line
        kind = r.get("kind") or _infer_kind(r)
        when = None
        if "when" in r:
            try:
                when = compile_condition(r["when"])
            except ConditionError as e:
                problems.append(
                    Problem(source, _line_of(lines, (*here, "when")), _dotted((*here, "when")), f"invalid CEL: {e}")
                )
                continue
        rules.append(
            Rule(
                id=r["id"],
                kind=kind,
                effect=r["effect"],
                message=r.get("message", ""),
                mode=r.get("mode", bundle_mode),
                fail_mode=r.get("fail_mode"),
                line=line,
                agents=_globs(r.get("agents")),
                tools=_globs(r.get("tools")),
                models=_globs(r.get("models")),
                side_effects=frozenset(r.get("side_effects") or ()),
                stages=frozenset(r.get("stages") or ()),
                when=when,
                budget_scope=r.get("scope", "session"),
                limits={k: float(v) for k, v in (r.get("limits") or {}).items()},
                rate_per=r.get("per", "agent"),
                capacity=float(r.get("capacity", 0)),
                refill_per_s=float(r.get("refill_per_second", 0)),
                detector=r.get("detector", ""),
                threshold=int(r.get("threshold", _DEFAULT_THRESHOLDS.get(r.get("detector", ""), 3))),
                window=int(r.get("window", 10)),
                scanner=r.get("scanner", ""),
                entities=dict(r.get("entities") or {}),
                sources=_globs(r.get("sources")),
                sink_args=tuple(r.get("args") or ()),
            )
        )
    if problems:
        raise PolicyError(problems)

    scope = spec.get("scope") or {}
    return PolicyBundle(
        name=meta["name"],
        version=str(meta["version"]),
        hash=sha256_hex(canonical_json(doc)),
        labels=dict(meta.get("labels") or {}),
        scope=BundleScope(_globs(scope.get("agents")), _globs(scope.get("environments")), dict(scope.get("labels") or {})),
        mode=bundle_mode,
        default_effect=default_effect,
        tools=tuple(
            ToolClass(_globs(t["name"]), t["side_effect"], bool(t.get("untrusted_output", False)))
            for t in spec.get("tools") or []
        ),
        capabilities=tuple(Capability(_globs(c["agents"]), c["tier"]) for c in spec.get("capabilities") or []),
        rules=tuple(rules),
        source=source,
        document=doc,
        unknown_side_effect=spec.get("unknown_side_effect", "write"),
    )


_DEFAULT_THRESHOLDS = {"repeat": 3, "oscillation": 3, "error_storm": 5, "ping_pong": 6, "no_progress": 5}


def _infer_kind(rule: dict[str, Any]) -> str:
    if "limits" in rule:
        return "budget"
    if "detector" in rule:
        return "loop"
    if "scanner" in rule:
        return "scanner"
    if "capacity" in rule:
        return "rate_limit"
    if "sources" in rule:
        return "taint"
    if "models" in rule:
        return "llm"
    return "tool"


def schema_problems(validator: jsonschema.protocols.Validator, doc: Any, lines: dict[Path_, int],
                    source: str) -> list[Problem]:
    """Every JSON Schema violation in ``doc``, each at the line of the offending key.

    An unknown key is reported at its own line (not its parent mapping's), with the keys that
    are allowed there, so a typo such as ``tool:`` for ``tools:`` is easy to spot.
    """
    out: list[Problem] = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = err.schema.get("properties") or {}
            unknown = [k for k in err.instance if k not in known]
            if unknown and known:
                for key in unknown:
                    out.append(Problem(source, _line_of(lines, (*path, key)), _dotted((*path, key)),
                                       f"unknown key {key!r} (expected one of: {', '.join(known)})"))
                continue
        out.append(Problem(source, _line_of(lines, path), _dotted(path), _schema_message(err)))
    return out


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key")
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    return err.message
