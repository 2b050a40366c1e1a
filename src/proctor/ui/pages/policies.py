"""The policies pages of the console (HTML and its JSON twin)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["console"])
