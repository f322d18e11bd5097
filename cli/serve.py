"""Commands that start one of gpulab's parts (api, dispatcher, worker) or migrate its database;
`gpulab up` and `gpulab workers`, which supervise several, are `cli.parts`'."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import typer
from rich.console import Console

from cli.errors import CliError
from service.settings import Settings, get_settings, safe_url

console = Console(stderr=True, soft_wrap=True)


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def migrate() -> None:
    """Bring the database schema to the newest version."""
    from migrations.migrate import revisions, upgrade

    settings = get_settings()
    if settings.is_sqlite:
        # A fresh state dir does not exist yet: SQLite would say "unable to open database file".
        from sqlalchemy.engine import make_url

        path = make_url(settings.database_url).database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    before, head = revisions(settings.database_url)
    upgrade(settings.database_url)
    where = f"database at {safe_url(settings.database_url)}"
    if before == head:
        console.print(f"{where} is up to date ({head})")
    else:  # an admin upgrading wants to see that something happened, and from where
        console.print(f"{where} migrated from {before or 'empty'} to {head}")


def require_migrated(settings: Settings) -> None:
    """Refuse to start a part on a database an older gpulab left: its queries would fail as 500s."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from migrations.migrate import behind

    path = make_url(settings.database_url).database if settings.is_sqlite else None
    if path and path != ":memory:" and not Path(path).expanduser().exists():
        return  # opening it would leave an empty file; the part says what is missing as before
    try:
        old = behind(settings.database_url)
    except SQLAlchemyError:  # the database is down: the parts wait for it, as they always have
        return
    if old is not None:
        raise CliError(f"the database at {safe_url(settings.database_url)} is at revision {old[0]} and this "
                       f"gpulab needs {old[1]}: run `gpulab migrate` with the same settings, then start it again")


def api(host: str = typer.Option("127.0.0.1", help="address to listen on"),
        port: int = typer.Option(8000, help="port to listen on")) -> None:
    """Run the HTTP API."""
    import uvicorn

    from service.api.app import create_app
    from service.heap import freeze_start_up

    settings = get_settings()
    require_migrated(settings)
    _logging()
    app = create_app(settings)
    freeze_start_up()
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def dispatcher() -> None:
    """Run the dispatcher (one is active at a time; others stand by)."""
    from service.heap import freeze_start_up
    from service.scheduling.dispatcher import Dispatcher

    settings = get_settings()
    require_migrated(settings)
    _logging()
    d = Dispatcher(settings)
    freeze_start_up()
    signal.signal(signal.SIGTERM, lambda *_: d.stop.set())
    try:
        d.run_forever()
    except KeyboardInterrupt:
        d.stop.set()


def worker(device: str = typer.Option("cpu", help="cpu, cpu:N (several CPU devices, for CPU gangs) or cuda:N"),
           slots: int = typer.Option(1, min=1, max=64,
                                     help="jobs at once (GPU jobs must declare gpu_memory_gb to share)"),
           host_name: str | None = typer.Option(None, help="host part of the device id (default GPULAB_HOST)"),
           log_level: str = typer.Option("INFO", help="DEBUG adds Celery's own detail, such as its traceback "
                                                      "of a job's lost process")) -> None:
    """Run a worker pinned to one device."""
    from worker.app import serve
    from worker.device import DeviceError

    settings = get_settings()
    require_migrated(settings)
    if host_name:
        settings = settings.model_copy(update={"host": host_name})
    try:
        serve(settings, device=device, slots=slots, loglevel=log_level.upper())
    except DeviceError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


# A part that exits is started again, always: a worker leaves on purpose when its consumer
# is dead, and a database or Redis outage can outlast several tries. Quick exits back off.
def check_settings() -> Settings:
    """Read the settings, exiting with a clear message when they contradict each other."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        from cli.console import print_error

        problems = []
        for e in exc.errors():
            names = [f"GPULAB_{str(p).upper()}" for p in e.get("loc", ())]
            given = f" (got {e['input']!r})" if names and not isinstance(e.get("input"), dict) else ""
            problems.append(f"{'.'.join(names) + ': ' if names else ''}{e['msg']}{given}")
        print_error(f"invalid settings: {'; '.join(problems)}: fix the environment variable")
        raise typer.Exit(2) from None
