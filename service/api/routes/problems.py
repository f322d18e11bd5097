"""/problems/{code}: one page per error code, where every problem's `type` points.

The pages are built from the error classes themselves (their docstring says what the error
means, `help` what to do), so a new error code has its page the moment it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.api.problems import problem_responses
from service.api.routing import Route
from service.errors import GpulabError, NotFound

router = APIRouter(prefix="/problems", tags=["problems"], route_class=Route)


@dataclass(frozen=True)
class ProblemPage:
    code: str
    status: int
    meaning: str
    what_to_do: str


def _subclasses(cls: type[GpulabError]) -> list[type[GpulabError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


def catalogue() -> dict[str, ProblemPage]:
    """Every error code the API can send, with what it means and what to do."""
    pages = {}
    for cls in _subclasses(GpulabError):
        meaning = " ".join((cls.__doc__ or "").split())
        pages[cls.code] = ProblemPage(code=cls.code, status=cls.status, meaning=meaning, what_to_do=cls.help)
    return dict(sorted(pages.items()))


def _html(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · gpulab</title>
<link rel="icon" href="/dashboard/favicon.svg"><link rel="stylesheet" href="/dashboard/style.css"></head>
<body><header><a class="brand" href="/">gpulab</a><nav><a href="/problems">Errors</a><a href="/docs">API</a></nav>
</header><main class="problems">{body}</main></body></html>""")


def _code(text: str) -> str:
    """Escape, then show `quoted` words as code, as the class docstrings write them."""
    parts = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


@router.get("", response_class=HTMLResponse, summary="Every error code the API sends")
def index() -> HTMLResponse:
    rows = "".join(
        f'<tr><td><a href="/problems/{p.code}">{p.code}</a></td><td class="num">{p.status}</td>'
        f"<td>{_code(p.meaning)}</td></tr>"
        for p in catalogue().values())
    return _html("Errors", "<h1>gpulab's errors</h1><p>Every error is <code>application/problem+json</code> "
                 "whose <code>type</code> links here, with a stable <code>code</code> and a <code>detail</code> "
                 "that names the field and the value.</p>"
                 f"<table><tr><th>code</th><th class=num>status</th><th>meaning</th></tr>{rows}</table>")


@router.get("/{code}", response_class=HTMLResponse, summary="What one error code means and what to do",
            responses=problem_responses(404))
def page(code: str) -> HTMLResponse:
    p = catalogue().get(code)
    if p is None:
        raise NotFound(f"gpulab sends no error with code {code!r}; /problems lists them", field="code", value=code)
    return _html(p.code, f'<h1 id="code">{p.code} <span class="muted">HTTP {p.status}</span></h1>'
                 f'<h2>What it means</h2><p id="meaning">{_code(p.meaning)}</p>'
                 f'<h2>What to do</h2><p id="what-to-do">{_code(p.what_to_do)}</p>'
                 '<p><a href="/problems">All error codes</a></p>')
