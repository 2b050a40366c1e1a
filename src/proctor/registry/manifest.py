"""Agent manifests: ``agent.yaml`` → a resolved, content-hashed agent version.

Resolution reads every file the manifest names (prompts, tool schemas, the policy bundle),
drops the paths (moving a file is not a change) and hashes the result: the version id is the
sha256 of the RFC 8785 canonical JSON of the resolved manifest. So identical content is the
same version wherever it came from, and any change — one tool schema, one prompt line, one
policy rule — is a new one. See docs/registry.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from proctor.core.canonical import canonical_json, sha256_hex
from proctor.policy.loader import (
    PolicyError,
    Problem,
    _dotted,
    _line_of,
    load_bundle_file,
    parse_documents,
    read_text,
    schema_problems,
)
from proctor.policy.model import SIDE_EFFECTS, TIERS

_NAME = r"^[a-z0-9][a-z0-9._-]*$"
_schema_ref: dict[str, Any] = {
    "description": "A JSON Schema inline, or the path of a JSON/YAML file holding one (relative to the manifest).",
    "oneOf": [{"type": "object"}, {"type": "string"}],
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://proctor.dev/schemas/agent-manifest.schema.json",
    "title": "Proctor agent manifest",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "proctor/v1"},
        "kind": {"const": "Agent"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": _NAME},
                "version": {"type": ["string", "integer"], "description": "A human label; the id is the hash."},
                "description": {"type": "string"},
                "owner": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["model"],
            "additionalProperties": False,
            "properties": {
                "model": {
                    "type": "object",
                    "required": ["provider", "id"],
                    "additionalProperties": False,
                    "properties": {
                        "provider": {"type": "string"},
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                    },
                },
                "prompts": {
                    "type": "object",
                    "description": "Prompt name -> file path (relative to the manifest).",
                    "additionalProperties": {"type": "string"},
                },
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "side_effect", "input_schema"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "description": {"type": "string"},
                            "side_effect": {"type": "string", "enum": list(SIDE_EFFECTS)},
                            "version": {"type": ["string", "integer"]},
                            "source": {"type": "string", "description": "python:<module>, mcp:<server>, http:<url>"},
                            "input_schema": _schema_ref,
                            "output_schema": _schema_ref,
                        },
                    },
                },
                "policy": {"type": "string", "description": "A policy bundle file (one bundle), relative path."},
                "tier": {"type": "string", "enum": list(TIERS)},
                "entrypoint": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                               "description": "module.path:callable"},
                "gates": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "approvals": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["role"],
                                "additionalProperties": False,
                                "properties": {"role": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
                            },
                        },
                        "policy_lint": {"type": "boolean"},
                        "evals": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


class ManifestError(PolicyError):
    """A manifest was refused; ``problems`` names each bad field with its file and line."""


@dataclass(frozen=True, slots=True)
class AgentVersion:
    """A resolved agent version: its content hash (the id) and the resolved manifest."""

    name: str
    version_id: str
    manifest: dict[str, Any]
    source: str = "<string>"

    @property
    def short_id(self) -> str:
        return self.version_id[:12]

    @property
    def label(self) -> str:
        return str(self.manifest.get("label") or self.short_id)


def version_id(resolved: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(resolved))


def load_manifest(path: str | Path) -> AgentVersion:
    """Read, validate and resolve ``agent.yaml``; refuse with every problem at file:line."""
    p = Path(path)
    text = read_text(p)
    docs = parse_documents(text, str(p))
    if len(docs) != 1:
        raise ManifestError([Problem(str(p), 1, "", f"expected one Agent document, found {len(docs)}")])
    doc, lines = docs[0]
    return resolve_manifest(doc, lines, str(p), p.parent)


def resolve_manifest(doc: Any, lines: dict[Any, int], source: str, base: Path) -> AgentVersion:
    problems = schema_problems(_VALIDATOR, doc, lines, source)
    if problems:
        raise ManifestError(problems)
    meta, spec = doc["metadata"], doc["spec"]

    def fail(path: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(source, _line_of(lines, path), _dotted(path), message))

    prompts: dict[str, Any] = {}
    for name, rel in sorted((spec.get("prompts") or {}).items()):
        f = base / rel
        if not f.is_file():
            fail(("spec", "prompts", name), f"prompt file {rel!r} not found (looked in {f})")
            continue
        content = f.read_text(encoding="utf-8")
        prompts[name] = {"sha256": sha256_hex(content), "content": content}

    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, t in enumerate(spec.get("tools") or []):
        here: tuple[str | int, ...] = ("spec", "tools", i)
        if t["name"] in seen:
            fail((*here, "name"), f"tool {t['name']!r} is listed twice")
            continue
        seen.add(t["name"])
        schemas = {}
        for key in ("input_schema", "output_schema"):
            value = t.get(key)
            if isinstance(value, str):
                value = _schema_file(base / value, (*here, key), fail)
            if value is not None:
                try:
                    jsonschema.Draft202012Validator.check_schema(value)
                except jsonschema.SchemaError as e:
                    fail((*here, key), f"not a valid JSON Schema: {e.message}")
            schemas[key] = value
        tools.append({
            "name": t["name"],
            "description": t.get("description", ""),
            "side_effect": t["side_effect"],
            "version": str(t.get("version", "")),
            "source": t.get("source", ""),
            "input_schema": schemas["input_schema"],
            "output_schema": schemas.get("output_schema"),
        })

    policy = None
    if spec.get("policy"):
        f = base / spec["policy"]
        if not f.is_file():
            fail(("spec", "policy"), f"policy bundle file {spec['policy']!r} not found (looked in {f})")
        else:
            try:
                bundles = load_bundle_file(f)
            except PolicyError as e:
                problems.extend(e.problems)
                bundles = []
            if len(bundles) > 1:
                fail(("spec", "policy"), f"{spec['policy']!r} holds {len(bundles)} bundles; an agent pins one")
            elif bundles:
                b = bundles[0]
                policy = {"name": b.name, "version": b.version, "hash": b.hash, "document": b.document}

    if problems:
        raise ManifestError(problems)
    resolved: dict[str, Any] = {
        "apiVersion": "proctor/v1",
        "kind": "Agent",
        "name": meta["name"],
        "label": str(meta["version"]) if "version" in meta else None,
        "description": meta.get("description", ""),
        "owner": meta.get("owner", ""),
        "labels": dict(meta.get("labels") or {}),
        "model": {"provider": spec["model"]["provider"], "id": spec["model"]["id"],
                  "parameters": dict(spec["model"].get("parameters") or {})},
        "prompts": prompts,
        "tools": sorted(tools, key=lambda t: t["name"]),
        "policy": policy,
        "tier": spec.get("tier", "execute_with_limits"),
        "entrypoint": spec.get("entrypoint"),
        "gates": dict(spec.get("gates") or {}),
    }
    try:
        vid = version_id(resolved)
    except (TypeError, ValueError) as e:  # a float NaN, an integer beyond 2**53 ... in a schema or parameter
        raise ManifestError([Problem(source, 1, "", f"the manifest cannot be hashed as canonical JSON: {e}")]) from None
    return AgentVersion(meta["name"], vid, resolved, source)


def _schema_file(path: Path, where: tuple[str | int, ...], fail: Any) -> Any:
    if not path.is_file():
        fail(where, f"schema file {path.name!r} not found (looked in {path})")
        return None
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        fail(where, f"schema file {path.name!r} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}")
        return None


def manifest_files(directory: str | Path) -> list[Path]:
    """The manifests under a directory (``agent.yaml`` / ``*.agent.yaml``, recursively), sorted."""
    root = Path(directory)
    found = {p for p in root.rglob("*.yaml") if p.name == "agent.yaml" or p.name.endswith(".agent.yaml")}
    return sorted(found)


def render_schema() -> str:
    """The published manifest schema (docs/agent-manifest.schema.json is generated from it)."""
    return json.dumps(MANIFEST_SCHEMA, indent=2) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_schema(), end="")
