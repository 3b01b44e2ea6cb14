"""``durably ui DB``: the web view (package ``durably.ui``, extra ``durably[ui]``)."""

from __future__ import annotations

import sys

import click

from ..errors import DurablyError
from . import _common as C


@click.command()
@C.DB_ARGUMENT
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on (elsewhere than loopback: --token required)",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="port to listen on")
@click.option("--allow-actions", is_flag=True, help="add cancel, resume and fork buttons (default: read-only)")
@click.option(
    "--token", envvar="DURABLY_UI_TOKEN", help="required of every request (open /?token=... once); env DURABLY_UI_TOKEN"
)
@click.option("--interval", default="1s", show_default=True, help="how often the page polls for changes (a duration)")
def ui(db: str, host: str, port: int, allow_actions: bool, token: str | None, interval: str) -> int:
    """Serve a web view of the database: workflows (live), each workflow's
    steps, children, events and messages, queues and schedules."""
    pause = C.seconds(interval, "--interval")
    if pause < 0.2:
        C.refuse("--interval: at least 200ms")
    from .. import ui as web

    if not web.is_loopback(host) and not token:
        C.refuse(f"--host {C.shown(host)}: listening beyond this machine needs --token (or DURABLY_UI_TOKEN)")
    if token is not None and len(token) < 16:
        C.refuse("--token: at least 16 characters")
    try:
        import starlette  # noqa: F401  # pyright: ignore[reportUnusedImport]  (present or not: the check)
        import uvicorn  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        C.refuse("the web view needs its extra: pip install 'durably[ui]'")
    try:
        app = web.make_app(db, allow_actions=allow_actions, token=token, hosts=web.hosts_for(host), interval=pause)
    except DurablyError as exc:  # not a durably database, no server, a URL that does not parse
        C.refuse(C.describe(exc))
    shown_host = f"[{host}]" if ":" in host else host
    mode = "actions on" if allow_actions else "read-only"
    print(f"durably ui: {C.where(db)} at http://{shown_host}:{port}/ ({mode}; Ctrl-C stops it)", file=sys.stderr)
    try:
        web.run(app, host, port)
    except OSError as exc:  # the port is taken, the address is not this machine's
        C.refuse(f"cannot listen on {C.shown(host)}:{port}: {C.shown(exc.strerror or exc)}")
    except KeyboardInterrupt:
        return 0
    return 0
