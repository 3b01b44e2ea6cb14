"""The web view's Starlette application: one page (static HTML, a script
and a style sheet shipped in this package) and the JSON it reads.

Security model (docs/guides/observability.md, "Security model"): reads only, through a read-only store,
unless ``allow_actions``; every response carries a strict
Content-Security-Policy (scripts and styles from this server only, no
inline code), and the page builds its DOM with ``textContent`` (a stored
string is never parsed as HTML). An action is a POST with JSON, carrying
the page's CSRF token in a header, refused when the browser says it comes
from another site (``Sec-Fetch-Site``, ``Origin``). With a ``token``, every
request must carry it (``?token=`` once, then an HttpOnly same-site cookie,
or ``Authorization: Bearer``). Host headers are checked (no DNS rebinding).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._status import STATUSES
from ..cli import _common as C
from ..errors import DurablyError
from . import _actions, _data

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TOKEN_COOKIE = "durably_ui_token"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]
_Next = Callable[[Request], Awaitable[Response]]


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _filters(request: Request) -> dict[str, Any]:
    """The list's filters from the query string (refused: C.Refused)."""
    q = request.query_params
    f: dict[str, Any] = {k: (q.get(k) or None) for k in ("status", "name", "id_prefix", "queue", "parent")}
    if f["status"] is not None and f["status"] not in STATUSES:
        C.refuse(f"status: {C.shown(f['status'])!r} is not one of {', '.join(STATUSES)}")
    for key in ("since", "until"):
        f[key] = None if not q.get(key) else C.point_in_time(q[key], key)
    for key in ("limit", "offset"):
        text = q.get(key) or "0"
        if not text.isdigit() or len(text) > 9:
            C.refuse(f"{key}: {C.shown(text)!r} is not a count")
        f[key] = int(text)
    f["oldest_first"] = q.get("oldest_first") in ("1", "true", "on")
    return f


class _View:
    """The endpoints, over one Source."""

    def __init__(self, db: str, *, allow_actions: bool, token: str | None, interval: float) -> None:
        self.db, self.source = db, _data.Source(db)
        self.allow_actions, self.token, self.interval = allow_actions, token, interval
        self.csrf = secrets.token_urlsafe(32)
        self.page = resources.files("durably.ui").joinpath("static/index.html").read_text("utf-8")

    def _read(self, what: Callable[..., Any], *args: Any) -> Response:
        try:
            with self.source.store() as store:
                doc = what(store, *args)
        except C.Refused as exc:
            return _error(str(exc), 400)
        except DurablyError as exc:  # the file went away, the server does not answer, ...
            return _error(C.describe(exc), 503)
        if doc is None:
            return _error("no such workflow", 404)
        return JSONResponse(doc)

    def index(self, request: Request) -> Response:
        if self.token is not None and request.query_params.get("token"):
            # The token arrived in the URL (once): kept as a cookie, and out of the address bar.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, request.query_params["token"], httponly=True, samesite="strict")
            return response
        page = self.page.replace("{{csrf}}", self.csrf).replace("{{actions}}", "on" if self.allow_actions else "off")
        return HTMLResponse(page.replace("{{interval}}", str(int(self.interval * 1000))))

    def workflows(self, request: Request) -> Response:
        try:
            f = _filters(request)
        except C.Refused as exc:
            return _error(str(exc), 400)
        return self._read(_data.workflows, f)

    def workflow(self, request: Request) -> Response:
        workflow_id = request.query_params.get("id")
        if not workflow_id:
            return _error("id: required", 400)
        return self._read(_data.workflow, workflow_id)

    def queues(self, request: Request) -> Response:
        return self._read(_data.queues)

    def schedules(self, request: Request) -> Response:
        return self._read(_data.schedules)

    async def action(self, request: Request) -> Response:
        if not self.allow_actions:
            return _error("actions are off: start the view with --allow-actions", 403)
        refused = _cross_site(request, self.csrf)
        if refused is not None:
            return _error(refused, 403)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error("the body is not JSON", 400)
        from starlette.concurrency import run_in_threadpool

        try:
            doc = await run_in_threadpool(_actions.run, self.db, request.path_params["action"], body)
        except C.Refused as exc:
            return _error(str(exc), 400 if exc.code == C.BAD_INPUT else 409)
        return JSONResponse(doc)

    async def guard(self, request: Request, call_next: _Next) -> Response:
        """Every response: the token checked (if any), security headers set."""
        if self.token is not None and not _has_token(request, self.token):
            response: Response = _error("a token is required: open /?token=... once", 401)
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _has_token(request: Request, token: str) -> bool:
    given = request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token") or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


def _cross_site(request: Request, csrf: str) -> str | None:
    """Why a POST is refused as a possible cross-site request (None: it is not)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return f"refused: a {site} request (Sec-Fetch-Site)"
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return "refused: the request comes from another origin"
    if not request.headers.get("content-type", "").startswith("application/json"):
        return "refused: an action is a JSON POST"
    if not hmac.compare_digest(request.headers.get("x-csrf-token", "").encode(), csrf.encode()):
        return "refused: missing or wrong CSRF token (reload the page)"
    return None


def make_app(
    db: str,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    hosts: list[str] | None = None,
    interval: float = 1.0,
) -> Starlette:
    """The web view of ``db`` (an SQLite path or a ``postgresql://`` URL) as
    an ASGI application. ``hosts``: the Host header values accepted
    (default: loopback names only); ``interval``: seconds between the
    page's live polls. Raises the database's DurablyError if it cannot be
    read (not a durably database, no server)."""
    view = _View(db, allow_actions=allow_actions, token=token, interval=interval)
    view.source.check()
    static = StaticFiles(directory=str(resources.files("durably.ui").joinpath("static")))
    routes = [
        Route("/", view.index),
        Route("/api/workflows", view.workflows),
        Route("/api/workflow", view.workflow),
        Route("/api/queues", view.queues),
        Route("/api/schedules", view.schedules),
        Route("/api/actions/{action}", view.action, methods=["POST"]),
        Mount("/static", app=static, name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts or LOOPBACK_HOSTS),
        Middleware(BaseHTTPMiddleware, dispatch=view.guard),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            view.source.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.view = view
    return app
