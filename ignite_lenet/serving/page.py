"""``GET /``: the drawing page, one self-contained HTML file (``static/index.html``, package data; no CDN)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(tags=["page"])

# The page's script and style are inline and it talks only to this server: nothing else may load or run.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def page_html() -> bytes:
    """The page's bytes, from the installed package."""
    return resources.files("ignite_lenet.serving").joinpath("static", "index.html").read_bytes()


@router.get("/", summary="The drawing page: draw a digit, see the prediction", response_model=None,
            responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"}})
async def page(request: Request) -> Response:
    return Response(request.app.state.page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
