"""The web console at `/ui`: a page and its files, served from the package by every
process with the `api` role. The console is a client of the public `/api/v1` API and
nothing else; this module only hands out its files.

The files are plain ES modules and one stylesheet (no build step), served by name
from a fixed set: whatever else sits in the directory, or any other name, is the
envelope's 404. The Content-Security-Policy allows this origin only and nothing
inline, so even a payload that slipped into the page as markup could not run.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from triggerd.api.http import file_server

UI_PATH = "/ui"
ASSET_PREFIX = "/ui/static"
CONSOLE_DIR = Path(__file__).parent / "static" / "console"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The console's files, by name; index.html is the page itself, served at /ui only.
ASSETS: dict[str, str] = {
    path.name: _TYPES[path.suffix]
    for path in sorted(CONSOLE_DIR.iterdir())
    if path.suffix in _TYPES
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Revalidated on each load (ETag, Last-Modified): the files change with the package only.
_ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                  "Content-Security-Policy": CSP}  # fmt: skip


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        CONSOLE_DIR / "index.html",
        headers={"Content-Type": "text/html; charset=utf-8", **PAGE_HEADERS},
    )


asset = file_server(CONSOLE_DIR, ASSETS, _ASSET_HEADERS)


async def _to_page(request: web.Request) -> web.StreamResponse:
    # Relative, as the page's own URLs are, so it holds behind a proxy mounting us under
    # a prefix: `ui/static/...` and `api/v1/...` resolve from /ui, not from /ui/.
    raise web.HTTPPermanentRedirect("../ui")


def add_routes(app: web.Application) -> None:
    """Not API operations: the OpenAPI document leaves them out (register after it)."""
    app.router.add_get(UI_PATH, page, allow_head=False)
    app.router.add_get(UI_PATH + "/", _to_page, allow_head=False)
    app.router.add_get(ASSET_PREFIX + "/{name}", asset, allow_head=False)
