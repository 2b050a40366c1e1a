"""The overview page (placeholder until the live view lands)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from proctor.ui.render import page

router = APIRouter(tags=["console"])


@page(router, "/", "overview.html", json_path="/overview.json")
def overview(request: Request) -> dict[str, Any]:
    return {"active": "overview"}
