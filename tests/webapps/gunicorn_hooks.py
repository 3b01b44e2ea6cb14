"""gunicorn config of the WSGI recipe of docs/guides/processes.md: open the module-level engine
in each worker after the fork, close it when the worker exits."""


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    from wsgi_app import engine

    engine.open()


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    from wsgi_app import engine

    engine.close()
