"""`gpulab`: submit and follow jobs, see devices and the queue, and start the service's parts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli import admin, serve
from cli.client import EXIT_ERROR, Api, CliError, save_token
from cli.console import client, err, out
from cli.follow import exit_code_for, follow
from service.settings import get_settings

app = typer.Typer(help="gpulab: a job service for the lab's GPUs.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.devices_app, name="devices")

for command in (serve.up, serve.api, serve.dispatcher, serve.worker, serve.migrate,
                admin.queue, admin.top, admin.usage, admin.config):
    app.command()(command)


@app.callback()
def _main() -> None:
    serve.check_settings()


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
    api = client()
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
    page = client().get("/jobs", params=params)
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
    out.print_json(data=client().get(f"/jobs/{job_id}"))


@app.command()
def logs(job_id: int, follow_: bool = typer.Option(False, "--follow", "-f", help="keep following")) -> None:
    """Print a job's log (and follow it with -f)."""
    api = client()
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
    job = client().post(f"/jobs/{job_id}/cancel")
    msg = "cancelled" if job["status"] == "cancelled" else "cancel requested; it stops at its next step"
    out.print(f"job {job_id}: {msg}")


@app.command()
def kinds(as_json: bool = typer.Option(False, "--json")) -> None:
    """List job kinds and their parameters."""
    data = client().get("/job-kinds")
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
    for a in client().get(f"/jobs/{job_id}/artifacts"):
        out.print(f"{a['name']}\t{a['content_type']}\t{a['size_bytes']} B")


@app.command()
def get(job_id: int, name: str, output: Path | None = typer.Option(None, "-o")) -> None:
    """Download one artifact of a job."""
    dest = output or Path(name)
    size = client().download(f"/jobs/{job_id}/artifacts/{name}", dest)
    err.print(f"saved {dest} ({size} B)")


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
