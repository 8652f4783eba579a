"""The light half of the model pages: links, security headers, error pages' wrapper and static files.

Imported with the app (function_app -> functions/ui.py); the templates (render.py, Jinja2) and the view
models (views.py) load on the first page request, so the pages add nothing to a cold start.

Every answer of the UI routes carries a strict Content-Security-Policy: scripts and styles come only
from the allow-listed static files (no inline script or style, no eval), nothing is framed, forms post
only to the app. Pages are never cached and send no Referer (their URL may hold the function key).
"""
from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import azure.functions as func

from shared.errors import PipelineError

STATIC_DIR = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
# The only files GET /api/ui/static/{file} serves: name -> media type (all UTF-8). Anything else is 404.
STATIC_FILES = {
    "chart.umd.min.js": "text/javascript",
    "chart.js.LICENSE.md": "text/plain",
    "ui.js": "text/javascript",
    "ui.css": "text/css",
}
STATIC_CACHE = "public, max-age=31536000, immutable"  # page links carry ?v=<content hash>
MAX_KEY_CHARS = 256


# -- links ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Links:
    """URLs of a page under the app's route prefix; the function key (?code=) is carried on page links.

    Static files and the admin API get no key in their URL: the static route is anonymous, and the
    admin key travels in a header only.
    """

    prefix: str  # the route prefix as a path, e.g. "/api" ("" when the host has none)
    code: str | None = None

    def _page(self, path: str, params: Mapping[str, str | int | None]) -> str:
        query = {k: str(v) for k, v in params.items() if v is not None}
        if self.code:
            query["code"] = self.code
        return f"{self.prefix}/{path}" + (f"?{urlencode(query)}" if query else "")

    def models(self) -> str:
        return self._page("ui", {})

    def model(self, name: str, version: int | None = None) -> str:
        return self._page(f"ui/models/{quote(name)}", {"version": version})

    def static(self, file: str, version: str) -> str:
        return f"{self.prefix}/ui/static/{quote(file)}?v={quote(version)}"

    def api(self, name: str) -> str:
        return f"{self.prefix}/registry/models/{quote(name)}"


def links_for(req: func.HttpRequest) -> Links:
    """The page's links: the route prefix taken from the request path, and its ?code= carried on."""
    path = urlsplit(req.url).path.rstrip("/")
    at = path.lower().rfind("/ui/models/")
    prefix = path[:at] if at >= 0 else path[:-3] if path.lower().endswith("/ui") else "/api"
    code = req.params.get("code") or None
    return Links(prefix, code if code is not None and len(code) <= MAX_KEY_CHARS else None)


# -- pages ------------------------------------------------------------------------------------------------


def html_response(body: str, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers=PAGE_HEADERS)


def handles_page_errors(handler: Callable[[func.HttpRequest], func.HttpResponse]
                        ) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Our typed errors become an HTML page with their status; anything else a logged 500 page with no internals."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        from shared.ui.render import error_html

        links = links_for(req)
        try:
            return handler(req)
        except PipelineError as exc:
            if exc.status >= 500:
                logging.error("%s: %s", handler.__name__, exc.internal or exc.message)
            return html_response(error_html(exc, links), exc.status)
        except Exception:
            logging.exception("%s: unexpected error", handler.__name__)
            return html_response(error_html(PipelineError("internal error; see the function logs"), links), 500)

    return wrapper


# -- static files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticFile:
    data: bytes
    mimetype: str
    version: str  # the first 12 hex digits of its sha256: a new file is a new URL


def static_file(name: str) -> StaticFile | None:
    """An allow-listed static file (read once), None for any other name."""
    return _load_static(name) if name in STATIC_FILES else None


@functools.cache
def _load_static(name: str) -> StaticFile:
    data = (STATIC_DIR / name).read_bytes()
    return StaticFile(data, STATIC_FILES[name], hashlib.sha256(data).hexdigest()[:12])


def static_headers(file: StaticFile) -> dict[str, str]:
    return {"Cache-Control": STATIC_CACHE, "X-Content-Type-Options": "nosniff", "ETag": f'"{file.version}"',
            "Content-Security-Policy": CSP}
