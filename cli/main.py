"""`gpulab`: submit and follow jobs, see devices and the queue, and start the service's parts."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli import admin, bundles, envs, local_run, parts, rerun, serve, views
from cli.client import Api, CliError, UsageError, save_token
from cli.console import client, err, out, print_error
from cli.errors import one_line
from cli.follow import exit_code_for, follow
from cli.params import build_params
from cli.sweeps import (
    cancel_batch,
    check_placeholders,
    combinations,
    fill_command,
    kind_params,
    submit_sweep,
    sweeps_of,
)
from service.settings import get_settings

app = typer.Typer(help="gpulab: a job service for the lab's GPUs.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.devices_app, name="devices")
app.add_typer(envs.envs_app, name="envs")

for command in (parts.up, serve.api, serve.dispatcher, serve.worker, parts.workers, serve.migrate,
                admin.queue, admin.top, admin.usage, admin.config, local_run.run):
    app.command()(command)

# Set by --debug: an unexpected error then shows its traceback instead of one line.
_debug = False


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks of unexpected errors")) -> None:
    global _debug
    _debug = debug
    serve.check_settings()


def params_schema(api: Api | None, kind: str) -> dict[str, Any] | None:
    """The JSON Schema of a kind's params: from this install's registry, else from the service."""
    from jobs.registry import UnknownKind, get_kind

    with contextlib.suppress(UnknownKind):  # a kind only the service knows (a lab's plug-in)
        return get_kind(kind).params.model_json_schema()
    if api is None:
        return None
    for k in api.get("/job-kinds"):
        if k["name"] == kind:
            return k["params_schema"]
    return None  # the service names the unknown kind when the job is submitted


@app.command()
def submit(
    kind: str | None = typer.Argument(None, help="the job kind (gpulab kinds lists them), or -- CMD ARG..."),
    _command: list[str] | None = typer.Argument(None, hidden=True),
    param: list[str] = typer.Option([], "-p", "--param", help="key=value, repeatable"),
    sweep: list[str] = typer.Option([], "--sweep", help="key=v1,v2,...: a job per combination, as one batch "
                                    "(repeatable; a command names each key as {key} in its arguments)"),
    working_dir: Path | None = typer.Option(None, "--working-dir", help="command jobs: the folder to upload"),
    env: list[str] = typer.Option([], "--env", help="command jobs: NAME=VALUE, repeatable"),
    python_env: str | None = typer.Option(None, "--python-env", help="command jobs: a registered environment"),
    requeue: bool = typer.Option(False, "--requeue", help="command jobs: rerun if the worker is lost"),
    device: str | None = typer.Option(None, "--device", "-d",
                                      help="cpu (the default), gpu, cuda:N, HOST/cuda:N, model=NAME, min_memory_gb=GB"),
    gpu_memory_gb: float | None = typer.Option(None, help="declared GPU memory (lets the job share a GPU)"),
    gpus: int | None = typer.Option(None, "--gpus", min=1,
                                    help="devices of one host the job holds at once (torchrun/DDP; default 1)"),
    priority: int | None = typer.Option(None, help="default 0"),
    timeout: int | None = typer.Option(None, help="time limit in seconds"),
    seed: int | None = typer.Option(None),
    like: int | None = typer.Option(None, "--like", metavar="JOB",
                                    help="start from job JOB's command or kind, params and settings; "
                                         "what you give here replaces its part"),
    no_wait: bool = typer.Option(False, "--no-wait", help="print the job id and return"),
    as_json: bool = typer.Option(False, "--json", help="print the finished job as JSON"),
) -> None:
    """Submit a job (a kind, or your own command after --), then follow it until it ends (exit 0 if it succeeded)."""
    api = client()
    command = bundles.command_argv()
    combos: list[dict[str, str]] = [{}]
    source = api.get(f"/jobs/{like}") if like is not None else None
    if source is not None:  # gpulab submit --like JOB [what changes]
        if sweep:
            raise UsageError("--like and --sweep: sweep from the command line, or rerun one job with --like")
        kind = source["kind"]
        params = rerun.like_params(api, source, command=command, working_dir=working_dir, env=bundles.parse_env(env),
                                   python_env=python_env, requeue=requeue,
                                   extra=build_params(param, params_schema(api, kind)), say=err.print)
        every = [params]
    elif command is not None:  # gpulab submit [--working-dir DIR] [-p server_dir=...] ... -- CMD ARG...
        extra = build_params(param, params_schema(api, "command"))  # before any upload: a bad -p costs nothing
        if clash := sorted(set(extra) & {"argv", "bundle", "env", "python_env", "requeue"}):
            raise UsageError(f"-p {clash[0]}: a command job takes it from the command line (the command "
                             "after --, --working-dir, --env, --python-env, --requeue)")
        sweeps = sweeps_of(sweep, fixed=list(extra))
        check_placeholders(command, list(sweeps))
        combos = combinations(sweeps) if sweeps else combos
        kind, params = "command", bundles.command_params(api, command, working_dir=working_dir,
                                                         env=bundles.parse_env(env), python_env=python_env,
                                                         requeue=requeue, say=err.print)
        params.update(extra)
        every = [{**params, "argv": fill_command(params["argv"], combo)} for combo in combos]
    elif working_dir is not None or env or python_env or requeue:
        raise UsageError("--working-dir, --env, --python-env and --requeue are for command jobs: "
                         "put the command after --, e.g. gpulab submit --working-dir . -- python train.py")
    elif kind is None:
        raise UsageError("name a job kind (gpulab kinds), or a command after --: gpulab submit -- python train.py")
    else:
        params = build_params(param, params_schema(api, kind))
        sweeps = sweeps_of(sweep, fixed=list(params))
        combos = combinations(sweeps) if sweeps else combos
        every = [kind_params(params, combo) for combo in combos]
    if source is not None:
        fields = rerun.like_fields(source, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb, priority=priority,
                                   timeout=timeout, seed=seed)
    else:
        fields = {"device": device or "cpu", "gpus": gpus, "gpu_memory_gb": gpu_memory_gb,
                  "priority": priority or 0, "timeout_s": timeout, "seed": seed}
    body: dict[str, Any] = {"kind": kind, "params": params,
                            **{key: value for key, value in fields.items() if value is not None}}
    if body.get("gpus") == 1:
        del body["gpus"]
    if sweep:
        submit_sweep(api, [{**body, "params": p} for p in every], combos)
        return
    job = api.post("/jobs", json=body)
    if no_wait:
        out.print(job["id"])
        return
    on = job["device_request"] if job.get("gpus", 1) == 1 else f"{job['gpus']} × {job['device_request']}"
    err.print(f"job {job['id']} submitted ({kind} on {on})")
    status = follow(api, job["id"])
    final = api.get(f"/jobs/{job['id']}")
    if as_json:
        out.print_json(data=final)
    elif final.get("result") is not None:
        out.print_json(data=final["result"])
    error = final.get("error")
    # The status line above showed the error's last line: only a longer one (a traceback) is printed again.
    if final["status"] != "succeeded" and error and error != error.splitlines()[-1][:500]:
        err.print(error, style="red", markup=False, highlight=False)
    raise typer.Exit(exit_code_for(status))


@app.command("jobs")
def list_jobs(
    me: bool = typer.Option(False, "--me", help="only my jobs"),
    status: list[str] = typer.Option([], "--status", "-s"),
    kind: str | None = typer.Option(None),
    batch: int | None = typer.Option(None, "--batch", help="the jobs of one batch (a --sweep)"),
    limit: int = typer.Option(30),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit, "me": me}
    if batch is not None:
        params["batch"] = batch
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
        table.add_row(str(j["id"]), j["owner"], j["kind"], views.status_text(j["status"], j["reason"]),
                      j["device_id"] or j["device_request"], _num(j["wait_seconds"]), _num(j["run_seconds"]))
    out.print(table)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


@app.command()
def show(job_id: int, as_json: bool = typer.Option(False, "--json", help="the job as JSON, for scripts")) -> None:
    """Show one job: status and reason, times, device, params and result."""
    job = client().get(f"/jobs/{job_id}")
    if as_json:
        out.print_json(data=job)
        return
    out.print(views.job_summary(job))


@app.command()
def logs(job_id: int, follow_: bool = typer.Option(False, "--follow", "-f", help="keep following")) -> None:
    """Print a job's log to stdout (and follow it with -f); status lines go to stderr."""
    api = client()
    if follow_:
        raise typer.Exit(exit_code_for(follow(api, job_id, log_to=sys.stdout, show_progress=False)))
    after = 0
    while True:
        page = api.get(f"/jobs/{job_id}/events", params={"after": after, "type": ["log", "status"]})
        for e in page["items"]:
            # Log text is written as it is, never wrapped: a pipe gets the job's own lines.
            if e["type"] == "log":
                sys.stdout.write(e["message"] + "\n")
            else:
                sys.stdout.flush()
                err.print(f"● {e['message']}", markup=False, highlight=False)
        if not page["items"]:
            break
        after = page["last_seq"]
    sys.stdout.flush()


@app.command()
def cancel(job_ids: list[int] = typer.Argument(None, metavar="[JOB]...", help="the jobs"),
           batch: int | None = typer.Option(None, "--batch", help="every unfinished job of this batch")) -> None:
    """Cancel jobs, or a batch's unfinished jobs (yours, or any as an admin)."""
    if bool(job_ids) == (batch is not None):
        raise UsageError("name jobs (gpulab cancel 12 13) or a batch (gpulab cancel --batch 12), not both")
    api = client()
    if batch is not None:
        cancel_batch(api, batch)
        return
    failed = False
    for job_id in job_ids:  # one refusal (a job already finished) leaves the others to cancel
        try:
            job = api.post(f"/jobs/{job_id}/cancel")
        except CliError as exc:
            if len(job_ids) == 1:
                raise
            print_error(f"job {job_id}: {exc}")
            failed = True
            continue
        if job["status"] == "cancelled":
            msg = "cancelled"
        elif job["kind"] == "command":
            msg = "cancel requested; the command gets SIGINT now, SIGTERM and SIGKILL if it goes on"
        else:
            msg = "cancel requested; it stops at its next step"
        out.print(f"job {job_id}: {msg}")
    if failed:
        raise typer.Exit(1)


@app.command()
def kinds(as_json: bool = typer.Option(False, "--json")) -> None:
    """List job kinds and their parameters."""
    data = client().get("/job-kinds")
    if as_json:
        out.print_json(data=data)
        return
    for k in data:
        schema = k["params_schema"]
        params = ", ".join(_param_text(n, p, n in schema.get("required", ()))
                           for n, p in schema.get("properties", {}).items())
        out.print(f"[bold]{k['name']}[/]{'' if k['enabled'] else ' (disabled)'}: {k['summary']}\n  {params}")


def _param_text(name: str, prop: dict[str, Any], required: bool) -> str:
    """`steps=1500`; `from_job (required)`; a default made by a factory as the empty value of its type."""
    if required:
        return f"{name} (required)"
    if "default" in prop:
        value = prop["default"]
        return f"{name}={value if isinstance(value, str) else json.dumps(value)}"  # as -p takes it: null, true
    empty = {"object": "{}", "array": "[]"}.get(prop.get("type", ""), "")
    return f"{name}={empty}"


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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: usage errors exit 2, failures exit 1, each as one line on stderr."""
    try:
        code = app(args=argv, prog_name="gpulab", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # click's usage errors (typer carries its own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        exit_code = getattr(exc, "exit_code", 2)
        if message:  # empty when the help was shown for a bare `gpulab`
            print_error(f"{message} (see `gpulab {_command_path(exc)}--help`)" if exit_code == 2 else message)
        sys.exit(exit_code)
    except Exception as exc:
        if _debug:
            raise
        settings = _settings_or_none()
        message, code = one_line(exc, database_url=settings.database_url if settings else "",
                                 redis_url=settings.redis_url if settings else "")
        print_error(message)
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)


def _command_path(exc: Any) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path.split(" ", 1)[1] if ctx is not None and " " in ctx.command_path else ""
    return f"{path} " if path else ""


def _settings_or_none() -> Any:
    try:
        return get_settings()
    except Exception:  # the settings themselves are what failed; the message needs no URL
        return None


if __name__ == "__main__":
    main()
