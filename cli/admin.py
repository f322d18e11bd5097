"""The `gpulab` commands for the lab's shared view and its admins: queue, devices, top, usage,
users and config. `cli.main` registers them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli import views
from cli.console import client, err, out
from cli.errors import CliError, no_database
from service.settings import get_settings

if TYPE_CHECKING:
    from service.db import Database

users_app = typer.Typer(help="Manage users (on the server: talks to the database); alone, list them.",
                        invoke_without_command=True)
devices_app = typer.Typer(help="See devices; drain and resume them (admins).", invoke_without_command=True)


def queue(as_json: bool = typer.Option(False, "--json"),
          me: bool = typer.Option(False, "--me", help="only your jobs, with their places in the whole queue"),
          limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="show at most this many")) -> None:
    """Pending jobs in the order they will start, and why each waits."""
    data = client().get("/queue", params={"me": me, "limit": limit})
    if as_json:
        out.print_json(data=data)
        return
    if not data["dispatcher_active"]:
        err.print("[yellow]no dispatcher is active: nothing will start[/]")
    if not data["items"]:
        err.print("you have no pending jobs" if me and data["total"] else "the queue is empty")
        return
    table = Table("#", "job", "owner", "kind", "device", "prio", "waiting", "reason", box=None)
    for e in data["items"]:
        table.add_row(str(e["position"]), str(e["job_id"]), e["owner"], e["kind"], views.queue_device(e),
                      str(e["priority"]), f"{e['waiting_s']:.0f}s", views.queue_reason(e))
    out.print(table)
    if (more := data["matching"] - len(data["items"])) > 0:
        err.print(f"… and {more} more (--limit {data['matching']} shows them all)")


@devices_app.callback()
def devices(ctx: typer.Context, as_json: bool = typer.Option(False, "--json"),
            details: bool = typer.Option(False, "--details", help="and each worker's torch/CUDA/cuDNN/driver")) -> None:
    """Every device, its state and what runs on it."""
    if ctx.invoked_subcommand:
        return
    data = client().get("/devices")
    if as_json:
        out.print_json(data=data)
        return
    out.print(views.devices_table(data))
    if details:
        out.print(views.runtime_table(data))


@devices_app.command("drain")
def drain(device_id: str) -> None:
    """Let running jobs finish and start nothing new on a device."""
    d = client().post(f"/devices/{device_id}/drain")
    out.print(f"{d['id']}: {d['state']}")


@devices_app.command("resume")
def resume(device_id: str) -> None:
    """Take new jobs on a drained device again."""
    d = client().post(f"/devices/{device_id}/resume")
    out.print(f"{d['id']}: {d['state']}")


def top(
    interval: float = typer.Option(2.0, help="seconds between refreshes"),
    once: bool = typer.Option(False, "--once", help="print one frame and exit (as when not on a terminal)"),
) -> None:
    """Devices, their jobs and the queue, refreshed live (Ctrl-C to leave)."""
    import time

    from rich.live import Live

    api = client()

    def frame() -> Any:
        return views.top_view(api.get("/devices"), api.get("/queue", params={"limit": 10}))

    if once or not out.is_terminal:  # piped or redirected: a live view would print nothing until Ctrl-C
        out.print(frame())
        return
    with contextlib.suppress(KeyboardInterrupt), Live(frame(), console=out, screen=False,
                                                       auto_refresh=False) as live:
        while True:  # until Ctrl-C
            time.sleep(interval)
            live.update(frame(), refresh=True)


def usage(
    since: str = typer.Option("7d", help="a span back from now (24h, 7d) or an ISO datetime"),
    group_by: str = typer.Option("member", "--by", help="member, device or kind"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Device-hours allocated and used, outcomes and waits over a window."""
    data = client().get("/usage", params={"since": since, "group_by": group_by})
    if as_json:
        out.print_json(data=data)
        return
    out.print(views.usage_heading(data))
    out.print(views.usage_table(data))
    for u in data["idle_jobs"]:
        out.print(f"[yellow]idle:[/] job {u['job_id']} ({u['owner']}) holds {u['device_id']} "
                  f"near 0 % for {data['idle_minutes']:.0f} min")


def service_db() -> Database:
    """The service's database, for the admin commands that open it rather than call the API.

    A SQLite file that is not there is not created: run with other settings than the service's,
    the command would leave an empty database where gpulab never looks."""
    from sqlalchemy.engine import make_url

    from service.db import Database

    settings = get_settings()
    path = make_url(settings.database_url).database if settings.is_sqlite else None
    if path and path != ":memory:" and not Path(path).exists():
        raise CliError(no_database(f"there is no gpulab database at {path}"))
    return Database.from_settings(settings)


@users_app.command("add")
def users_add(name: str, admin: bool = typer.Option(False, "--admin"),
              unix_user: str | None = typer.Option(None, "--unix-user",
                                                   help="the Unix account their command jobs run as")) -> None:
    """Add a user and print their token (shown once)."""
    from service.store.users import create_user

    db = service_db()
    with db.writing() as session:
        _, token = create_user(session=session, name=name, is_admin=admin, unix_user=unix_user)
    out.print(token)
    err.print(f"{name}'s token, shown once: {name} runs `gpulab login TOKEN` with it", highlight=False)


@users_app.command("set")
def users_set(name: str, unix_user: str = typer.Option(..., "--unix-user",
                                                       help="the Unix account; '' for the default one")) -> None:
    """Change the Unix account a member's command jobs run as."""
    from service.store.users import set_unix_user

    db = service_db()
    with db.writing() as session:
        user = set_unix_user(session=session, name=name, unix_user=unix_user or None)
        out.print(f"{user.name} runs commands as {user.unix_user or 'the default account (GPULAB_COMMAND_USER)'}")


@users_app.callback()
def users(ctx: typer.Context) -> None:
    """Alone, list the users (as `gpulab envs` and `gpulab devices` list theirs)."""
    if ctx.invoked_subcommand is None:
        users_list()


@users_app.command("list")
def users_list() -> None:
    """List users; 'no token' marks those who cannot use the API (revoked, say)."""
    from service.store.users import list_users, users_without_token

    db = service_db()
    with db.reading() as session:
        locked_out = users_without_token(session=session)
        for u in list_users(session=session):
            out.print(f"{u.name}{' (admin)' if u.is_admin else ''}"
                      + (f" unix:{u.unix_user}" if u.unix_user else "")
                      + (" (no token: `gpulab users token NAME` issues one)" if u.name in locked_out else ""),
                      markup=False, highlight=False)


@users_app.command("revoke")
def users_revoke(name: str) -> None:
    """Revoke every token of a user (they can no longer use the API)."""
    from service.store.users import revoke_tokens

    db = service_db()
    with db.writing() as session:
        n = revoke_tokens(session=session, name=name)
    out.print(f"revoked {n} token(s) of {name}")


@users_app.command("token")
def users_token(name: str) -> None:
    """Issue another token for a user (shown once)."""
    from service.store.users import issue_token

    db = service_db()
    with db.writing() as session:
        out.print(issue_token(session=session, name=name))


def config(markdown: bool = typer.Option(False, "--markdown", help="the README's table of settings")) -> None:
    """Show the settings this shell's environment gives (secrets left out), or every setting as a Markdown table.

    A running gpulab keeps those of the environment it started in: export a change, then restart it.
    """
    from service.settings import Settings

    if not markdown:
        out.print_json(data=get_settings().public())
        return
    out.print("| variable | default | meaning |\n|---|---|---|", markup=False)
    for name, field in Settings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else f"GPULAB_{name.upper()}"
        default = "(hostname)" if field.default_factory else ("" if field.default is None else field.default)
        out.print(f"| `{env}` | `{default}` | {field.description or ''} |", markup=False, soft_wrap=True)
