"""The web view (``durably ui DB``; extra ``durably[ui]``): a page an
operator leaves open, reading the database as the command line does.

``make_app(db, allow_actions=False, token=None, hosts=None, interval=1.0)``
is the ASGI application; ``serve(...)`` runs it under uvicorn.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["hosts_for", "is_loopback", "make_app", "run", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_app(db: str, **options: Any) -> Any:
    """The web view of ``db`` as a Starlette application (see ``_app.make_app``)."""
    from ._app import make_app as build

    return build(db, **options)


def serve(
    db: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_actions: bool = False,
    token: str | None = None,
    interval: float = 1.0,
) -> None:
    """Serve the web view of ``db`` until interrupted (uvicorn, one process)."""
    app = make_app(db, allow_actions=allow_actions, token=token, hosts=hosts_for(host), interval=interval)
    run(app, host, port)


def hosts_for(host: str) -> list[str] | None:
    """The Host headers accepted when listening on ``host``: loopback names
    (None: the default) on loopback; elsewhere any (the token guards it)."""
    return None if is_loopback(host) else ["*"]


def run(app: Any, host: str, port: int) -> None:
    """Run ``app`` under uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
