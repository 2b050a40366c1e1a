"""The registry's operations: push, sync, deploy through gates, roll back, diff, inventory.

Promotion gates are evaluated before a pointer moves, and their results are stored with the
move — applied or refused — so the history shows why each move happened or did not:

- ``approvals``: ``[{role, count}]`` — sign-offs given with the deploy (``--approve NAME:ROLE``);
- ``policy_lint``: the pinned policy bundle validates and lints without warnings;
- ``evals``: evaluation gates, filled by later work through :data:`EVAL_GATES` (a name without
  a provider refuses the move: a missing result is not a pass).

A rollback returns the environment to the version that was live before the current one; it
is recorded like any move, and skips the approval gates (it restores a known-good state).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from proctor.policy.loader import PolicyError, load_bundle_text
from proctor.registry.manifest import AgentVersion, ManifestError, load_manifest, manifest_files
from proctor.store.registry import Deployment, PushResult, RegistryError, RegistryStore, StoredVersion

#: gate name -> check(version manifest, environment) -> (passed, detail). Evaluations plug in here.
EVAL_GATES: dict[str, Callable[[dict[str, Any], str], tuple[bool, str]]] = {}


class PromotionRefused(RegistryError):
    """A move was refused by its gates; ``deployment`` is the recorded refusal."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        failed = [g for g in deployment.gates if not g.get("passed")]
        why = "; ".join(f"{g['gate']}: {g.get('detail', '')}" for g in failed) or "refused"
        super().__init__(f"{deployment.agent} {deployment.version_id[:12]} -> {deployment.environment} refused: {why}")


@dataclass(slots=True)
class SyncItem:
    path: str
    name: str
    version_id: str
    created: bool
    previous: str | None  # the agent's newest version before this sync, if different
    changes: list[Any]


def default_actor() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


class Registry:
    def __init__(self, engine: Engine) -> None:
        self.store = RegistryStore(engine)

    # -- versions ------------------------------------------------------------------------------

    def push(self, source: str | Path | AgentVersion, *, by: str | None = None) -> PushResult:
        v = source if isinstance(source, AgentVersion) else load_manifest(source)
        return self.store.push(v.name, v.version_id, v.manifest, by=by or default_actor())

    def sync(self, directory: str | Path, *, by: str | None = None) -> list[SyncItem]:
        """Register every manifest under ``directory``; all are validated before any is pushed."""
        from proctor.registry.diff import diff_versions

        files = manifest_files(directory)
        if not files:
            raise RegistryError(f"no agent manifests (agent.yaml or *.agent.yaml) under {directory}")
        versions: list[AgentVersion] = []
        problems = []
        for f in files:
            try:
                versions.append(load_manifest(f))
            except PolicyError as e:
                problems.extend(e.problems)
        if problems:
            raise ManifestError(problems)
        out = []
        for v in versions:
            before = self.store.list_versions(v.name, limit=1)
            prev = before[0] if before and before[0].version_id != v.version_id else None
            res = self.push(v, by=by)
            changes = diff_versions(prev.manifest, v.manifest) if prev is not None and res.created else []
            out.append(SyncItem(v.source, v.name, v.version_id, res.created, prev.version_id if prev else None, changes))
        return out

    def get(self, ref: str, agent: str | None = None) -> StoredVersion:
        return self.store.get(ref, agent)

    # -- gates and moves -----------------------------------------------------------------------

    def check_gates(self, version: StoredVersion, env: str, approvals: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        gates = version.manifest.get("gates") or {}
        results: list[dict[str, Any]] = []
        given = list(approvals)
        for need in gates.get("approvals") or []:
            role, count = need["role"], int(need.get("count", 1))
            people = sorted({who for who, r in given if r == role})
            results.append({"gate": f"approvals:{role}", "passed": len(people) >= count,
                            "detail": f"{len(people)} of {count} {role} approval(s)"
                                      + (f": {', '.join(people)}" if people else "")})
        if gates.get("policy_lint"):
            results.append(self._policy_lint_gate(version))
        for name in gates.get("evals") or []:
            check = EVAL_GATES.get(name)
            if check is None:
                results.append({"gate": f"eval:{name}", "passed": False,
                                "detail": "no evaluation result available for this gate yet"})
            else:
                ok, detail = check(version.manifest, env)
                results.append({"gate": f"eval:{name}", "passed": ok, "detail": detail})
        return results

    @staticmethod
    def _policy_lint_gate(version: StoredVersion) -> dict[str, Any]:
        from proctor.policy.testing import lint_bundle

        policy = version.manifest.get("policy")
        if not policy:
            return {"gate": "policy_lint", "passed": False, "detail": "the manifest pins no policy bundle"}
        try:
            [bundle] = load_bundle_text(yaml.safe_dump(policy["document"], sort_keys=False), f"{policy['name']}.yaml")
        except PolicyError as e:
            return {"gate": "policy_lint", "passed": False, "detail": f"invalid bundle: {e.problems[0]}"}
        warnings = lint_bundle(bundle, {})
        if warnings:
            return {"gate": "policy_lint", "passed": False,
                    "detail": f"{len(warnings)} lint warning(s), first: {warnings[0].where}: {warnings[0].message}"}
        return {"gate": "policy_lint", "passed": True, "detail": f"{bundle.ref} lints clean"}

    def deploy(self, ref: str, env: str, *, by: str | None = None, reason: str = "",
               evidence: Iterable[str] = (), approvals: Iterable[tuple[str, str]] = (),
               agent: str | None = None) -> Deployment:
        """Move ``env``'s pointer to the version ``ref`` if its gates pass; record the move either way.

        Raises :class:`PromotionRefused` (carrying the recorded refusal) when a gate fails.
        """
        version = self.store.get(ref, agent)
        current = self.store.current(version.name, env)
        gates = self.check_gates(version, env, approvals)
        passed = all(g["passed"] for g in gates)
        d = self.store.record_move(version.name, env, version.version_id, action="deploy", applied=passed,
                                   by=by or default_actor(), reason=reason, evidence=list(evidence), gates=gates,
                                   expect_current=current)
        if d.status != "applied":
            raise PromotionRefused(d)
        return d

    def rollback(self, agent: str, env: str, *, by: str | None = None, reason: str = "") -> Deployment:
        """Put back the version that was live in ``env`` before the current one."""
        if env not in {e["name"] for e in self.store.environments()}:
            raise RegistryError(f"unknown environment {env!r}: see `proctor agent env ls`")
        target = self.store.previous_good(agent, env)
        if target is None:
            current = self.store.current(agent, env)
            raise RegistryError(f"nothing to roll back to: {agent} has "
                                + (f"only ever run {current[:12]} in {env}" if current else f"never been deployed to {env}"))
        return self.store.record_move(agent, env, target, action="rollback", applied=True, by=by or default_actor(),
                                      reason=reason or "rollback", evidence=[],
                                      gates=[{"gate": "rollback", "passed": True,
                                              "detail": "restores the previous known-good version; approval gates skipped"}])

    # -- diffs ---------------------------------------------------------------------------------

    def diff(self, ref_a: str, ref_b: str, agent: str | None = None) -> tuple[StoredVersion, StoredVersion, list[Any]]:
        from proctor.registry.diff import diff_versions

        a, b = self.store.get(ref_a, agent), self.store.get(ref_b, agent)
        return a, b, diff_versions(a.manifest, b.manifest)

    def what_changed(self, agent: str, env: str) -> tuple[StoredVersion | None, StoredVersion | None, list[Any]]:
        """The live version in ``env`` against the one live before it (the last known-good)."""
        from proctor.registry.diff import diff_versions

        current = self.store.current(agent, env)
        previous = self.store.previous_good(agent, env)
        if current is None:
            raise RegistryError(f"{agent} is not deployed to {env}")
        cur = self.store.get(current)
        if previous is None:
            return cur, None, []
        prev = self.store.get(previous)
        return cur, prev, diff_versions(prev.manifest, cur.manifest)
