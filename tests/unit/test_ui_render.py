"""The pages' HTML: autoescaping, no inline script or style, security headers, error pages, static allow-list."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest

from devhost.azurite import ROOT
from functions import ui
from shared import registry
from shared.contract import InputField, ModelSignature
from shared.errors import InvalidParameter, NotFound, PipelineError
from shared.memory_storage import MemoryStorage
from shared.ui import render, serve, views
from tests.unit.ui_records import seed_model

LINKS = views.Links("/api", "k")
EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside script elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def parsed(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def assert_no_inline_code(html: str) -> None:
    """What the CSP would block anyway: inline scripts, style elements or attributes, event handlers."""
    tags = parsed(html)
    for tag, attrs in tags.tags:
        assert tag != "style", "a <style> element"
        assert "style" not in attrs, f"a style attribute on <{tag}>"
        assert not [a for a in attrs if a.startswith("on")], f"an event handler on <{tag}>: {attrs}"
        for name in ("href", "src", "action"):
            assert not (attrs.get(name) or "").lower().startswith("javascript:"), attrs
    for attrs, text in tags.scripts:
        assert attrs.get("src") or attrs.get("type") == "application/json", f"an inline script: {text[:80]}"


@pytest.fixture
def storage() -> MemoryStorage:
    storage = MemoryStorage()
    seed_model(storage, "m", 8, monitored=True, description=EVIL)
    return storage


def test_the_pages_escape_what_users_wrote_and_carry_no_inline_script_or_style(storage: MemoryStorage) -> None:
    for html in (render.models_html(views.load_models_page(storage, LINKS)),
                 render.model_html(views.load_model_page(storage, "m", None, LINKS, {})),
                 render.model_html(views.load_model_page(storage, "m", 8, LINKS, {}))):
        assert EVIL not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
        assert_no_inline_code(html)


def test_the_data_island_is_json_that_cannot_close_its_script_element(storage: MemoryStorage) -> None:
    page = views.load_model_page(storage, "m", None, LINKS, {})
    page.data["histograms"]["bmi"]["labels"][0] = "</script><script>alert(1)</script>"  # a category name from data
    html = render.model_html(page)
    [(attrs, text)] = [s for s in parsed(html).scripts if s[0].get("type") == "application/json"]
    assert "</" not in text and json.loads(text)["histograms"]["bmi"]["labels"][0].startswith("</script>")


def test_class_labels_in_the_confusion_matrix_are_escaped() -> None:
    charts = {"confusion": {"labels": [EVIL, "ok"], "matrix": [[3, 1], [0, 4]]}}
    confusion = views.confusion_view(charts)
    assert confusion is not None and [c.heat for c in confusion.rows[0]] == [7, 2]
    storage = MemoryStorage()
    seed_model(storage, "m", 3)
    page = views.load_model_page(storage, "m", None, LINKS, {})
    html = render.model_html(views.ModelPage(**{**page.__dict__, "confusion": confusion}))
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_every_page_answer_carries_the_strict_content_security_policy() -> None:
    response = serve.html_response("<p>x</p>")
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    assert response.headers["Referrer-Policy"] == "no-referrer" and response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff" and response.mimetype == "text/html"


def request(url: str, **kwargs: Any) -> func.HttpRequest:
    """A GET as the host builds it: the query string also parsed into params."""
    params = {**dict(parse_qsl(urlsplit(url).query)), **kwargs.pop("params", {})}
    return func.HttpRequest(method="GET", url=url, body=b"", params=params, **kwargs)


@pytest.mark.parametrize(("error", "status"), [
    (NotFound("model (name=nope) not found"), 404),
    (InvalidParameter("query parameter version ('abc') is not valid: use a whole number from 1 to 999999"), 400),
    (RuntimeError("secret path /home/x/.azurite and a traceback"), 500),
])
def test_errors_are_html_pages_with_their_status_and_never_a_traceback(error: Exception, status: int) -> None:
    @serve.handles_page_errors
    def page(req: func.HttpRequest) -> func.HttpResponse:
        raise error

    response = page(request("http://h/api/ui/models/nope?code=k"))
    html = response.get_body().decode()
    assert response.status_code == status and response.headers["Content-Security-Policy"] == serve.CSP
    assert "Traceback" not in html and "secret path" not in html and "/home/" not in html
    assert 'href="/api/ui?code=k"' in html
    if isinstance(error, PipelineError):
        assert error.message.replace("'", "&#39;") in html
    assert_no_inline_code(html)


def test_the_route_prefix_and_the_key_are_taken_from_the_request() -> None:
    assert serve.links_for(request("http://h/api/ui?code=k")) == views.Links("/api", "k")
    assert serve.links_for(request("http://h/api/ui/models/ui?version=2")) == views.Links("/api", None)
    assert serve.links_for(request("http://h/ui/models/m/")) == views.Links("", None)
    assert serve.links_for(request("http://h/api/ui", params={"code": "x" * 300})).code is None


def static(name: str, **headers: str) -> func.HttpResponse:
    handler = ui.ui_static.build().get_user_function()
    return handler(request(f"http://h/api/ui/static/{name}", route_params={"file": name}, headers=headers))


def test_static_files_are_served_from_an_allow_list_with_long_cache_headers() -> None:
    for name, mimetype in serve.STATIC_FILES.items():
        response = static(name)
        assert response.status_code == 200 and response.mimetype == mimetype
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.get_body() == (serve.STATIC_DIR / name).read_bytes()
    etag = static("ui.js").headers["ETag"]
    assert static("ui.js", **{"if-none-match": etag}).status_code == 304


@pytest.mark.parametrize("name", ["../views.py", "..", "%2e%2e", "..%2fviews.py", "%2e%2e%2fviews.py", "views.py",
                                  "templates/base.html", "./ui.js", "UI.JS", "ui.js/", "ui.js%00", "ui.js\x00",
                                  "chart.umd.min.js.map", "/etc/passwd", "..\\views.py", ""])
def test_anything_else_under_static_is_not_found(name: str) -> None:
    response = static(name)
    assert response.status_code == 404 and response.get_body() == b"not found"


def test_the_vendored_chart_js_is_the_pinned_npm_packages_file() -> None:
    package = ROOT / "node_modules" / "chart.js"
    assert package.is_dir(), "node_modules/chart.js is missing: run `npm ci` (make setup does)"
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["chart.js"]
    installed = json.loads((package / "package.json").read_text())["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned) and installed == pinned, "pin an exact version (--save-exact)"
    vendored = serve.STATIC_DIR / "chart.umd.min.js"
    assert vendored.read_bytes() == (package / "dist" / "chart.umd.min.js").read_bytes(), (
        "shared/ui/static/chart.umd.min.js differs from the npm package: copy node_modules/chart.js/dist/"
        "chart.umd.min.js and LICENSE.md after upgrading")
    assert (serve.STATIC_DIR / "chart.js.LICENSE.md").read_bytes() == (package / "LICENSE.md").read_bytes()
    assert f"Chart.js v{pinned}" in vendored.read_text()[:200]


def test_the_pages_reference_only_static_files_the_route_serves() -> None:
    templates = "".join(p.read_text() for p in Path(render.HERE / "templates").glob("*.html"))
    assert set(re.findall(r"assets\['([^']+)'\]", templates)) <= set(serve.STATIC_FILES)
    script = (serve.STATIC_DIR / "ui.js").read_text()
    for banned in ("localStorage", "sessionStorage", "document.cookie", "eval(", "new Function", "innerHTML"):
        assert banned not in script, banned


def test_the_contract_section_shows_inputs_outputs_and_changes_with_categories_escaped(storage: MemoryStorage) -> None:
    theirs = ModelSignature.from_json(registry.get_version(storage, "m", 7).signature or {})
    colour = InputField(name="colour", type="string", imputation="missing category", allowed=["red", EVIL])
    ours = theirs.model_copy(update={"inputs": [*theirs.inputs[1:], colour]})
    registry.update_version(storage, "m", 8, lambda r: r.model_copy(update={"signature": ours.to_json()}))
    html = render.model_html(views.load_model_page(storage, "m", 8, LINKS, {}))
    section = html[html.index('id="contract"'):html.index("<h3>Spec</h3>")]
    assert EVIL not in section and "red, &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in section
    assert "</span> input age removed</li>" in section
    assert "</span> input colour added (every input column must be sent)</li>" in section
    assert section.count("<tr><td class=\"mono\">") == len(ours.inputs) and "regression" in section
    assert_no_inline_code(html)
