"""The container files, checked without Docker: docker-compose.yml against the Compose
Specification schema, the Dockerfile with hadolint, and every command they run against the
real `gpulab` CLI. The tools come from the `dev` extra and work offline."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# Services that run someone else's image; every other service runs gpulab's.
THIRD_PARTY = {"postgres", "redis"}


def _load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        return yaml.safe_load(f)


COMPOSE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _dockerfile_cmd() -> list[str]:
    """The last CMD of the Dockerfile, which must be in exec (JSON) form."""
    cmds = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert cmds, "the Dockerfile has no CMD"
    argv = json.loads(cmds[-1].removeprefix("CMD "))
    assert isinstance(argv, list), f"CMD must be in exec form, got {cmds[-1]!r}"
    return [str(a) for a in argv]


def _gpulab_commands() -> list[Any]:
    commands = [pytest.param("Dockerfile CMD", _dockerfile_cmd(), id="Dockerfile-CMD")]
    for name, service in SERVICES.items():
        if name not in THIRD_PARTY:
            argv = _argv(service.get("command", []))
            commands.append(pytest.param(f"service {name}", argv, id=name))
    return commands


def _tool(name: str) -> str:
    """Path of a dev-extra tool; missing, it skips locally and fails in CI."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        reason = f"`{name}` is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _gpulab() -> list[str]:
    """The installed console script, or the same Typer app through this interpreter."""
    script = Path(sys.executable).parent / "gpulab"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import app; app()"]


def _cuda_indices(argv: list[str]) -> list[int]:
    """Every N a command names with `--device cuda:N` (or `--device=cuda:N`)."""
    found = []
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--device", "-d") and i + 1 < len(argv) else None
        if arg.startswith("--device="):
            value = arg.split("=", 1)[1]
        if value is not None and (m := re.fullmatch(r"cuda:(\d+)", value)):
            found.append(int(m.group(1)))
    return found


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            _tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint_at_warning_level() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("where", "argv"), _gpulab_commands())
def test_every_container_command_is_a_gpulab_command(where: str, argv: list[str]) -> None:
    assert argv[:1] == ["gpulab"], f"{where} runs {argv!r}, not a gpulab command"
    # --help is eager: Click still rejects an unknown command or option name before it, but
    # does not act on the values, so nothing here connects to a database or a broker.
    result = subprocess.run(
        [*_gpulab(), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"{where}: `{shlex.join(argv)} --help` failed:\n" + (
        result.stdout + result.stderr
    )
    assert "Usage" in result.stdout, result.stdout


def test_every_gpu_worker_reserves_the_cards_it_names_and_no_card_twice() -> None:
    """A worker container reserves exactly the cards its processes serve (all of a host's, so a
    gang's leader sees every card of the gang), and no card is served by two containers."""
    seen: dict[int, str] = {}
    for name, service in SERVICES.items():
        indices = _cuda_indices(_argv(service.get("command", [])))
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        devices = devices.get("devices", [])
        if not indices:
            assert devices == [], f"{name} reserves {devices!r} but runs no CUDA worker"
            continue
        assert len(indices) == len(set(indices)), f"{name} serves a card twice: {indices}"
        for index in indices:
            assert index not in seen, f"{name} and {seen.get(index)} both serve cuda:{index}"
            seen[index] = name
        assert len(devices) == 1, f"{name} must reserve its cards in one nvidia entry, has {devices!r}"
        (device,) = devices
        assert device.get("driver") == "nvidia", f"{name}: {device!r}"
        assert sorted(str(d) for d in device.get("device_ids", [])) == sorted(str(i) for i in indices), (
            f"{name} runs cuda:{indices} but reserves device_ids {device.get('device_ids')!r}"
        )
        assert "gpu" in device.get("capabilities", []), f"{name}: {device!r}"
        # Ranks of a gang share tensors through /dev/shm.
        assert service.get("shm_size") or service.get("ipc") == "host", f"{name} keeps Docker's 64 MB /dev/shm"
    assert seen, "no service runs a GPU worker"


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = SERVICES["redis"]
    argv = _argv(redis["command"])
    assert "--appendonly" in argv, argv
    assert argv[argv.index("--appendonly") + 1] == "yes", argv
    assert any(str(v).split(":")[1:2] == ["/data"] for v in redis.get("volumes", [])), redis


def test_parts_start_in_order_and_share_settings() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["restart"] == "no"
    assert "/healthz" in " ".join(_argv(SERVICES["api"]["healthcheck"]["test"]))
    for name, service in SERVICES.items():
        if name in THIRD_PARTY:
            continue
        env = service["environment"]
        assert env["GPULAB_HOST"] == "${GPULAB_HOST:-labserver}", name
        assert "@postgres:5432/" in env["GPULAB_DATABASE_URL"], name
        assert env["GPULAB_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?"), name
        assert "@redis:6379/" in env["GPULAB_REDIS_URL"], name
        assert any(str(v).startswith("artifacts:") for v in service["volumes"]), name
        if name != "migrate":
            depends = service["depends_on"]
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
            assert depends["redis"]["condition"] == "service_healthy", name


def test_the_database_and_broker_passwords_have_no_default() -> None:
    """Members' command jobs run in the workers container and reach postgres:5432 and
    redis:6379 over its network: a password anyone can read in this file would hand them every
    token hash and job (PostgreSQL) or every queue and live log (Redis)."""
    text = COMPOSE_FILE.read_text()
    for variable in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses, f"docker-compose.yml never uses {variable}"
        for use in uses:
            assert use.startswith(":?"), f"${{{variable}{use}}} gives it a default or lets it be empty"
    assert ":gpulab@" not in SERVICES["api"]["environment"]["GPULAB_DATABASE_URL"]
    redis = _argv(SERVICES["redis"]["command"])
    assert redis[redis.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?"), redis
    # redis-cli answers an unauthenticated ping with NOAUTH and exit code 0.
    health = " ".join(_argv(SERVICES["redis"]["healthcheck"]["test"]))
    assert "PONG" in health and SERVICES["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD"), health
