"""``GET /metrics``: the Prometheus text exposition of :class:`proctor.telemetry.metrics.ProctorMetrics`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

router = APIRouter()

_TEXT = {"description": "The Prometheus text exposition format", "content": {"text/plain": {}}}


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True, response_class=Response,
            responses={200: _TEXT})
def metrics(request: Request) -> Response:
    # A plain def: the approval gauges read the database, so this runs in the thread pool.
    m = request.app.state.proctor.metrics
    if m is None:
        raise HTTPException(404, "metrics are not enabled in this app")
    body, content_type = m.render()
    return Response(body, media_type=content_type)
