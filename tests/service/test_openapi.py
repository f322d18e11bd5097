"""The API's own documentation: /docs and /redoc load nothing from outside, the OpenAPI declares
the problem+json errors and the bearer scheme, and every problem's `type` resolves to a page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from migrations.migrate import upgrade
from service.api.app import create_app
from service.api.routes.problems import catalogue
from service.db import Database
from service.errors import GpulabError
from service.settings import Settings
from service.store.users import create_user
from tests.support import services

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("openapi")
    url = f"sqlite:///{tmp / 'gpulab.sqlite3'}"
    upgrade(url)
    settings = Settings(database_url=url, redis_url=f"{services.REDIS_BASE_URL}/0", state_dir=tmp, host="testhost")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, str]:
    db: Database = client.app.state.gpulab.db  # type: ignore[attr-defined]
    with db.writing() as s:
        _, admin = create_user(session=s, name="ada", is_admin=True)
        _, member = create_user(session=s, name="bob")
    return {"admin": admin, "member": member}


def _external_urls(html: str) -> list[str]:
    attributes = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html)
    return attributes + re.findall(r"url:\s*['\"](https?://[^'\"]+)", html)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_doc_pages_load_only_local_files(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert _external_urls(page.text) == []
    scripts = re.findall(r"""(?:src|href)=["'](/[^"']+\.(?:js|css))""", page.text)
    assert scripts, page.text
    for asset in scripts:
        r = client.get(asset)
        assert r.status_code == 200, asset
        assert len(r.content) > 100_000, asset  # the real bundle, not a stub


def test_swagger_ui_has_an_authorize_button(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    paths = spec["paths"]
    assert paths["/jobs"]["get"]["security"] == [{"bearer": []}]
    assert paths["/users"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in paths["/healthz"]["get"]  # probes need no token
    assert "security" not in paths["/problems/{code}"]["get"]


def _problem_statuses(operation: dict) -> set[int]:
    out = set()
    for status, spec in operation["responses"].items():
        content = spec.get("content", {})
        if PROBLEM in content:
            assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
            out.add(int(status))
    return out


def test_operations_declare_the_problems_they_send(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code", "detail"} <= set(problem["required"])
    paths = spec["paths"]
    assert _problem_statuses(paths["/jobs"]["post"]) >= {401, 403, 409, 413, 422, 429, 503}
    assert _problem_statuses(paths["/jobs/{job_id}"]["get"]) >= {401, 404, 422, 503}
    assert _problem_statuses(paths["/jobs/{job_id}/cancel"]["post"]) >= {401, 403, 404, 409}
    assert 403 in _problem_statuses(paths["/users"]["post"])  # admins only
    assert 403 not in _problem_statuses(paths["/jobs/{job_id}"]["get"])
    # FastAPI's own validation-error shape is never sent, so it is never declared.
    assert "HTTPValidationError" not in str(paths)
    declared = set().union(*(_problem_statuses(op) for ops in paths.values() for op in ops.values()))
    assert declared >= {401, 403, 404, 409, 413, 422, 429, 503}


def test_a_real_error_links_to_its_page(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/jobs/424242", headers={"Authorization": f"Bearer {tokens['member']}"})
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"] == "/problems/job_not_found"
    page = client.get(r.json()["type"])
    assert page.status_code == 200
    assert "No job has this id" in page.text and "gpulab jobs" in page.text
    r = client.post("/users", json={"name": "eve"}, headers={"Authorization": f"Bearer {tokens['member']}"})
    assert r.status_code == 403 and client.get(r.json()["type"]).status_code == 200
    r = client.get("/jobs")
    assert r.status_code == 401 and client.get(r.json()["type"]).status_code == 200


def test_every_error_code_has_its_own_page(client: TestClient) -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    for cls in subclasses(GpulabError):
        # Its own words, not inherited ones: a new code must say what it means and what to do.
        assert "__doc__" in vars(cls) and cls.__doc__, cls
        assert "help" in vars(cls) or cls is GpulabError, cls
        page = client.get(f"/problems/{cls.code}")
        assert page.status_code == 200, cls.code
        assert 'id="meaning"' in page.text and 'id="what-to-do"' in page.text
    index = client.get("/problems").text
    assert all(f'href="/problems/{code}"' in index for code in catalogue())
    missing = client.get("/problems/no_such_code")
    assert missing.status_code == 404 and missing.json()["field"] == "code"


def test_favicon(client: TestClient) -> None:
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert Path("service/dashboard/favicon.svg").read_bytes() == r.content
