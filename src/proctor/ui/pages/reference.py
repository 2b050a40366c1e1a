"""The API reference page: every REST route from the server's own OpenAPI document.

FastAPI's /docs and /redoc pages load Swagger UI and ReDoc from a CDN, which an air-gapped
install cannot reach, so the server turns them off and the console renders the same document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from proctor.ui.render import page

router = APIRouter(tags=["console"])

_METHODS = ("get", "post", "put", "patch", "delete")


def _params(op: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": p.get("name", ""), "in": p.get("in", ""), "required": bool(p.get("required")),
             "description": p.get("description") or (p.get("schema") or {}).get("description", "")}
            for p in op.get("parameters", [])]


@page(router, "/reference", "reference.html")
def reference(request: Request) -> dict[str, Any]:
    doc = request.app.openapi()
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in sorted(doc.get("paths", {}).items()):
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            group = path.split("/")[2] if path.startswith("/api/") else path.strip("/").split("/")[0]
            groups.setdefault(group or "other", []).append({
                "method": method.upper(), "path": path, "summary": op.get("summary", ""),
                "description": op.get("description", ""), "params": _params(op),
                "body": "requestBody" in op,
            })
    return {"active": "", "title": doc.get("info", {}).get("title", "Proctor"),
            "version": doc.get("info", {}).get("version", ""),
            "groups": [{"name": k, "routes": v} for k, v in sorted(groups.items())]}
