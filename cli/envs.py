"""`gpulab envs`: the Python environments command jobs may pick (`--python-env NAME`)."""

from __future__ import annotations

import typer

from cli.console import client, out

envs_app = typer.Typer(help="Python environments for command jobs (admins add them).", invoke_without_command=True)


@envs_app.callback()
def envs(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered environments."""
    if ctx.invoked_subcommand:
        return
    data = client().get("/envs")
    if as_json:
        out.print_json(data=data)
        return
    for e in data:
        out.print(f"{e['name']}\t{e['path']}", markup=False, highlight=False)
    if not data:
        out.print("no environments registered: jobs use the worker's own (an admin adds more with gpulab envs add)")


@envs_app.command("add")
def add(name: str, path: str = typer.Argument(..., help="the prefix holding bin/python (a venv or conda env)")) -> None:
    """Register (or move) an environment by name (admins)."""
    e = client().request("PUT", f"/envs/{name}", json={"path": path})
    out.print(f"{e['name']}: {e['path']}", markup=False, highlight=False)


@envs_app.command("remove")
def remove(name: str) -> None:
    """Unregister an environment (admins); jobs that named it and have not started fail saying so."""
    client().request("DELETE", f"/envs/{name}")
    out.print(f"{name}: removed", markup=False, highlight=False)
