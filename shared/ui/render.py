"""HTML of the model pages: Jinja2 templates with autoescaping on, and the error page of the error tree.

Loaded on the first page request (Jinja2 is imported then); serve.py holds the headers and static files.
"""
from __future__ import annotations

import functools
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import PipelineError
from shared.ui.serve import STATIC_FILES, Links, static_file

if TYPE_CHECKING:
    import jinja2

    from shared.ui.views import ModelPage, ModelsPage

HERE = Path(__file__).parent


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment: autoescaping on for every template, undefined names are errors."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, num=num, pct=pct, short=short)
    return env


def render(template: str, **context: Any) -> str:
    """One template rendered with the page context (plus the static file URLs)."""
    links: Links = context["links"]
    assets = {name: links.static(name, f.version) for name in STATIC_FILES if (f := static_file(name)) is not None}
    return environment().get_template(template).render(assets=assets, **context)


def models_html(page: ModelsPage) -> str:
    return render("models.html", page=page, links=page.links, title="Models")


def model_html(page: ModelPage) -> str:
    return render("model.html", page=page, links=page.links, title=f"Model {page.model}")


def error_html(exc: PipelineError, links: Links) -> str:
    """The error page: status, code and message (never a traceback), and a way back to the list."""
    return render("error.html", links=links, title=f"{exc.status} {exc.code}", status=exc.status, code=exc.code,
                  message=exc.message)


# -- filters --------------------------------------------------------------------------------------------


def when(value: datetime | str | None) -> str:
    """A time as 'YYYY-MM-DD HH:MM:SS UTC' (ISO text is parsed first)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return when(parsed)
    return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.utcoffset() is not None else "")


def num(value: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits; '-' for none or non-finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def pct(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.1%}"


def short(value: Any, length: int = 12) -> str:
    text = "" if value is None else str(value)
    return text[:length]
