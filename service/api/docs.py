"""/docs and /redoc from files on this machine, and an OpenAPI that declares what the API really sends.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank on a lab server
without internet. The fastapi-offline package ships both bundles; gpulab serves them itself.
The schema gets the bearer scheme (Swagger UI's Authorize button) and, on every operation,
the application/problem+json responses that its dependencies and parameters can produce.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.api.deps import admin_user, current_user
from service.api.problems import ALWAYS_POSSIBLE, Problem, problem_responses

ASSETS = "/docs-assets"
# The doc pages load from this server alone. ReDoc's bundle hard-codes one outside image (the
# Redocly logo in its menu footer); the policy stops the browser from even asking for it.
CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self' 'unsafe-inline' blob:; "
       "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:")
SCHEME = "bearer"
FAVICON = "/dashboard/favicon.svg"


def _calls(dependant: Dependant) -> set[Any]:
    """Every dependency callable under this one, recursively."""
    out: set[Any] = set()
    for dep in dependant.dependencies:
        out.add(dep.call)
        out |= _calls(dep)
    return out


def _automatic_problems(route: APIRoute) -> list[int]:
    """The statuses any route of this shape can answer with, whatever its handler does."""
    calls = _calls(route.dependant)
    statuses = list(ALWAYS_POSSIBLE)
    if route.body_field is not None:
        statuses.append(413)  # the request guard's body limit
    if current_user in calls or admin_user in calls:
        statuses.append(401)
    if admin_user in calls:
        statuses.append(403)
    if route.dependant.path_params:
        statuses.append(404)
    if route.dependant.query_params or route.dependant.path_params or route.dependant.header_params \
            or route.body_field is not None:
        statuses.append(422)
    if route.body_field is not None:
        statuses.append(413)  # the request guard refuses any body past its limit (1 MiB; bundles stream)
    return statuses


def declare_problems(router: APIRouter) -> None:
    """Add the problem+json responses each route can send (its own `responses=` are kept).

    Call it on a router before the app includes it: FastAPI copies routes when it includes them.
    """
    for route in router.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for status, spec in problem_responses(*_automatic_problems(route)).items():
                route.responses.setdefault(status, spec)
            if {current_user, admin_user} & _calls(route.dependant):
                _AUTHED.update((route.path, method.lower()) for method in route.methods or ())


# (path, method) of the operations that need a token, gathered by declare_problems.
_AUTHED: set[tuple[str, str]] = set()


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, built once: problem schema, bearer scheme, security per operation."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components["securitySchemes"] = {
        SCHEME: {"type": "http", "scheme": "bearer",
                 "description": "A member's token: `gpulab users add NAME` prints one."}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if (path, method) in _AUTHED:
                operation["security"] = [{SCHEME: []}]
    app.openapi_schema = schema
    return schema


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets from the installed package, and the richer OpenAPI.

    The routers must have gone through `declare_problems` before the app included them.
    """
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _local_only(get_swagger_ui_html(
            openapi_url=openapi_url, title="gpulab API", swagger_favicon_url=FAVICON,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"persistAuthorization": True},
        ))

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local_only(get_redoc_html(openapi_url=openapi_url, title="gpulab API", redoc_favicon_url=FAVICON,
                                          redoc_js_url=f"{ASSETS}/redoc.standalone.js", with_google_fonts=False))

    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
