"""`gpulab`: submit and follow jobs, see devices and the queue, and start the service's parts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from service.cli import serve, views
from service.cli.client import EXIT_ERROR, Api, CliError, save_token
from service.cli.follow import exit_code_for, follow
from service.settings import get_settings

app = typer.Typer(help="gpulab: a job service for the lab's GPUs.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
users_app = typer.Typer(help="Manage users (on the server: talks to the database).", no_args_is_help=True)
devices_app = typer.Typer(help="See devices; drain and resume them (admins).", invoke_without_command=True)
app.add_typer(users_app, name="users")
app.add_typer(devices_app, name="devices")
out = Console()
err = Console(stderr=True, soft_wrap=True)

for command in (serve.up, serve.api, serve.dispatcher, serve.worker, serve.migrate):
    app.command()(command)


@app.callback()
def _main() -> None:
    serve.check_settings()


def _api() -> Api:
    return Api(get_settings())


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value`; the value is JSON when it parses (numbers, lists, true), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CliError(f"-p {text!r}: write parameters as key=value")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


@app.command()
def submit(
    kind: str = typer.Argument(..., help="the job kind (gpulab kinds lists them)"),
    param: list[str] = typer.Option([], "-p", "--param", help="key=value, repeatable"),
    device: str = typer.Option("cpu", "--device", "-d",
                               help="cpu, gpu, cuda:N, HOST/cuda:N, model=NAME, min_memory_gb=GB"),
    gpu_memory_gb: float | None = typer.Option(None, help="declared GPU memory (lets the job share a GPU)"),
    priority: int = typer.Option(0),
    timeout: int | None = typer.Option(None, help="time limit in seconds"),
    seed: int | None = typer.Option(None),
    no_wait: bool = typer.Option(False, "--no-wait", help="print the job id and return"),
    as_json: bool = typer.Option(False, "--json", help="print the finished job as JSON"),
) -> None:
    """Submit a job, then follow its log and progress until it ends (exit 0 only if it succeeded)."""
    api = _api()
    params = dict(parse_param(p) for p in param)
    body: dict[str, Any] = {"kind": kind, "params": params, "device": device, "priority": priority}
    for key, value in (("gpu_memory_gb", gpu_memory_gb), ("timeout_s", timeout), ("seed", seed)):
        if value is not None:
            body[key] = value
    job = api.post("/jobs", json=body)
    if no_wait:
        out.print(job["id"])
        return
    err.print(f"job {job['id']} submitted ({kind} on {job['device_request']})")
    status = follow(api, job["id"], err)
    final = api.get(f"/jobs/{job['id']}")
    if as_json:
        out.print_json(data=final)
    elif final.get("result") is not None:
        out.print_json(data=final["result"])
    if final["status"] != "succeeded" and final.get("error"):
        err.print(final["error"], style="red", markup=False, highlight=False)
    raise typer.Exit(exit_code_for(status))


@app.command("jobs")
def list_jobs(
    me: bool = typer.Option(False, "--me", help="only my jobs"),
    status: list[str] = typer.Option([], "--status", "-s"),
    kind: str | None = typer.Option(None),
    limit: int = typer.Option(30),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit, "me": me}
    if status:
        params["status"] = status
    if kind:
        params["kind"] = kind
    page = _api().get("/jobs", params=params)
    if as_json:
        out.print_json(data=page)
        return
    table = Table("id", "owner", "kind", "status", "device", "wait s", "run s", box=None)
    for j in page["items"]:
        table.add_row(str(j["id"]), j["owner"], j["kind"], j["status"] + (f" ({j['reason']})" if j["reason"] else ""),
                      j["device_id"] or j["device_request"], _num(j["wait_seconds"]), _num(j["run_seconds"]))
    out.print(table)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


@app.command()
def show(job_id: int) -> None:
    """Show one job as JSON."""
    out.print_json(data=_api().get(f"/jobs/{job_id}"))


@app.command()
def logs(job_id: int, follow_: bool = typer.Option(False, "--follow", "-f", help="keep following")) -> None:
    """Print a job's log (and follow it with -f)."""
    api = _api()
    if follow_:
        raise typer.Exit(exit_code_for(follow(api, job_id, err, show_progress=False)))
    after = 0
    while True:
        page = api.get(f"/jobs/{job_id}/events", params={"after": after, "type": ["log", "status"]})
        for e in page["items"]:
            out.print(e["message"] if e["type"] == "log" else f"● {e['message']}", markup=False, highlight=False)
        if not page["items"]:
            break
        after = page["last_seq"]


@app.command()
def cancel(job_id: int) -> None:
    """Cancel a job (yours, or any as an admin)."""
    job = _api().post(f"/jobs/{job_id}/cancel")
    msg = "cancelled" if job["status"] == "cancelled" else "cancel requested; it stops at its next step"
    out.print(f"job {job_id}: {msg}")


@app.command()
def kinds(as_json: bool = typer.Option(False, "--json")) -> None:
    """List job kinds and their parameters."""
    data = _api().get("/job-kinds")
    if as_json:
        out.print_json(data=data)
        return
    for k in data:
        props = k["params_schema"].get("properties", {})
        params = ", ".join(f"{n}={p.get('default', '?')}" for n, p in props.items())
        out.print(f"[bold]{k['name']}[/]{'' if k['enabled'] else ' (disabled)'}: {k['summary']}\n  {params}")


@app.command()
def artifacts(job_id: int) -> None:
    """List a job's artifacts."""
    for a in _api().get(f"/jobs/{job_id}/artifacts"):
        out.print(f"{a['name']}\t{a['content_type']}\t{a['size_bytes']} B")


@app.command()
def get(job_id: int, name: str, output: Path | None = typer.Option(None, "-o")) -> None:
    """Download one artifact of a job."""
    dest = output or Path(name)
    size = _api().download(f"/jobs/{job_id}/artifacts/{name}", dest)
    err.print(f"saved {dest} ({size} B)")


@app.command()
def queue(as_json: bool = typer.Option(False, "--json")) -> None:
    """Pending jobs in the order they will start, and why each waits."""
    data = _api().get("/queue")
    if as_json:
        out.print_json(data=data)
        return
    if not data["dispatcher_active"]:
        err.print("[yellow]no dispatcher is active: nothing will start[/]")
    table = Table("#", "job", "owner", "kind", "device", "prio", "waiting", "reason", box=None)
    for e in data["items"]:
        table.add_row(str(e["position"]), str(e["job_id"]), e["owner"], e["kind"], e["device_request"],
                      str(e["priority"]), f"{e['waiting_s']:.0f}s", e["reason"] or f"starts on {e['next_device']}")
    out.print(table)


@devices_app.callback()
def devices(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every device, its state and what runs on it."""
    if ctx.invoked_subcommand:
        return
    data = _api().get("/devices")
    if as_json:
        out.print_json(data=data)
        return
    out.print(views.devices_table(data))


@devices_app.command("drain")
def drain(device_id: str) -> None:
    """Let running jobs finish and start nothing new on a device."""
    d = _api().post(f"/devices/{device_id}/drain")
    out.print(f"{d['id']}: {d['state']}")


@devices_app.command("resume")
def resume(device_id: str) -> None:
    """Take new jobs on a drained device again."""
    d = _api().post(f"/devices/{device_id}/resume")
    out.print(f"{d['id']}: {d['state']}")


@app.command()
def top(
    interval: float = typer.Option(2.0, help="seconds between refreshes"),
    once: bool = typer.Option(False, "--once", help="print one frame and exit"),
) -> None:
    """Devices, their jobs and the queue, refreshed live (Ctrl-C to leave)."""
    import time

    from rich.live import Live

    api = _api()

    def frame() -> Any:
        return views.top_view(api.get("/devices"), api.get("/queue"))

    if once:
        out.print(frame())
        return
    try:
        with Live(frame(), console=out, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass


@app.command()
def usage(
    since: str = typer.Option("7d", help="a span back from now (24h, 7d) or an ISO datetime"),
    group_by: str = typer.Option("member", "--by", help="member, device or kind"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Device-hours allocated and used, outcomes and waits over a window."""
    data = _api().get("/usage", params={"since": since, "group_by": group_by})
    if as_json:
        out.print_json(data=data)
        return
    out.print(f"usage since {data['since'][:19]} by {data['group_by']}")
    out.print(views.usage_table(data))
    for u in data["idle_jobs"]:
        out.print(f"[yellow]idle:[/] job {u['job_id']} ({u['owner']}) holds {u['device_id']} "
                  f"near 0 % for {data['idle_minutes']:.0f} min")


@users_app.command("add")
def users_add(name: str, admin: bool = typer.Option(False, "--admin")) -> None:
    """Add a user and print their token (shown once)."""
    from service.db import Database
    from service.store.users import create_user

    db = Database.from_settings(get_settings())
    with db.writing() as session:
        _, token = create_user(session=session, name=name, is_admin=admin)
    out.print(token)


@users_app.command("list")
def users_list() -> None:
    """List users."""
    from service.db import Database
    from service.store.users import list_users

    db = Database.from_settings(get_settings())
    with db.reading() as session:
        for u in list_users(session=session):
            out.print(f"{u.name}{' (admin)' if u.is_admin else ''}")


@users_app.command("revoke")
def users_revoke(name: str) -> None:
    """Revoke every token of a user (they can no longer use the API)."""
    from service.db import Database
    from service.store.users import revoke_tokens

    db = Database.from_settings(get_settings())
    with db.writing() as session:
        n = revoke_tokens(session=session, name=name)
    out.print(f"revoked {n} token(s) of {name}")


@users_app.command("token")
def users_token(name: str) -> None:
    """Issue another token for a user (shown once)."""
    from service.db import Database
    from service.store.users import issue_token

    db = Database.from_settings(get_settings())
    with db.writing() as session:
        out.print(issue_token(session=session, name=name))


@app.command()
def config(markdown: bool = typer.Option(False, "--markdown", help="the README's table of settings")) -> None:
    """Show the effective settings (secrets left out), or every setting as a Markdown table."""
    from service.settings import Settings

    if not markdown:
        out.print_json(data=get_settings().public())
        return
    out.print("| variable | default | meaning |\n|---|---|---|", markup=False)
    for name, field in Settings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else f"GPULAB_{name.upper()}"
        default = "(hostname)" if field.default_factory else ("" if field.default is None else field.default)
        out.print(f"| `{env}` | `{default}` | {field.description or ''} |", markup=False, soft_wrap=True)


@app.command()
def login(token: str = typer.Argument(..., help="your token")) -> None:
    """Save your token for this machine user."""
    path = save_token(get_settings(), token)
    me = Api(get_settings(), token=token).get("/me")
    err.print(f"logged in as {me['name']}; token saved to {path}")


@app.command()
def run(
    kind: str,
    param: list[str] = typer.Option([], "-p", "--param"),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu or cuda:0"),
    seed: int = typer.Option(0),
    artifacts_dir: Path = typer.Option(Path("gpulab-run"), help="where artifacts go"),
) -> None:
    """Run one job in this process, without the service, and print its result as JSON."""
    from jobs.context import LocalContext
    from jobs.registry import get_kind

    kind_obj = get_kind(kind)
    params = kind_obj.validate(dict(parse_param(p) for p in param))
    ctx = LocalContext(artifacts_root=artifacts_dir, job_id="run", device=device, seed=seed, echo=True)
    result = kind_obj.run(params, ctx)
    out.print_json(data=result)


def main() -> None:
    try:
        app()
    except CliError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
