"""Links and forms shared by the console pages where humans act (approvals, kill switches, silences).

* ``read_form``         — a urlencoded body, bounded, without python-multipart;
* ``check_same_origin`` — refuse a form posted from another site (CSRF), also while auth is off;
* ``see_other``         — POST/redirect/GET;
* ``session_url`` / ``trace_url`` — the deep links of sessions and spans;
* ``limit_param``       — a checked ``?limit=``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response


def session_url(session_id: str | None) -> str | None:
    return f"/sessions/{quote(session_id, safe='')}" if session_id else None


def trace_url(trace_id: str | None, span_id: str | None = None) -> str | None:
    if not trace_id:
        return None
    return f"/traces/{trace_id}" + (f"?span={span_id}" if span_id else "")


def limit_param(value: str | None, default: int, maximum: int) -> int:
    """A ``?limit=`` query value: ``default`` when absent, else a number from 1 to ``maximum`` (400 if not)."""
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        raise HTTPException(400, f"limit must be a number from 1 to {maximum}, not {value!r}") from None
    if not 1 <= n <= maximum:
        raise HTTPException(400, f"limit must be from 1 to {maximum}, not {n}")
    return n


MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 100


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body as a dict (a repeated field: the last value wins).

    Parsed here rather than with ``request.form()``, which needs python-multipart, a package
    the server does not otherwise depend on. Browsers send plain forms (and htmx its posts)
    urlencoded; multipart is refused with 415.
    """
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in ("", "application/x-www-form-urlencoded"):
        raise HTTPException(415, f"send the form as application/x-www-form-urlencoded, not {ctype}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"form too large (at most {MAX_FORM_BYTES // 1024} KiB)")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"unreadable form: {exc}") from exc
    return dict(pairs)


def check_same_origin(request: Request) -> None:
    """Refuse a form posted from another site (cross-site request forgery).

    Browsers send ``Origin`` (and ``Sec-Fetch-Site``) with every POST; a script without them
    (curl, httpx) is not a browser riding someone's session and is let through.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, f"refused a form posted from another site (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(403, f"refused a form posted from another origin ({origin})")


def see_other(path: str) -> Response:
    """POST/redirect/GET: reloading the page that follows does not post again."""
    return RedirectResponse(path, status_code=303)

