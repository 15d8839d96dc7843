"""The web console's files: the page and its scripts, styles and pictures, shipped with the package
(no build step, nothing fetched from elsewhere)."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}


def _asset(name: str) -> bytes:
    folder = resources.files("api").joinpath("static")
    if "/" in name or name.startswith(".") or not any(name.endswith(ext) for ext in MEDIA_TYPES):
        raise HTTPException(404, f"no file {name!r}")
    path = folder.joinpath(name)
    if not path.is_file():
        raise HTTPException(404, f"no file {name!r}")
    return path.read_bytes()


def add_console_routes(app: FastAPI) -> None:
    """On the app itself (not an included router), like the page at /, so they are listed with its routes."""

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        ext = "." + name.rsplit(".", 1)[-1]
        # Revalidated on every load, so a new version shows at once after an upgrade.
        return Response(_asset(name), media_type=MEDIA_TYPES[ext], headers={"Cache-Control": "no-cache"})

    @app.get("/live/{camera_id}", response_class=HTMLResponse, include_in_schema=False)
    def live_page(camera_id: str) -> HTMLResponse:
        """One camera full-screen: the link to give parents."""
        return HTMLResponse(_asset("live.html").decode())
