"""Every check a job request passes before anything is written, and the job it then makes.

They read nothing a concurrent submit changes, so a submit runs them before its locks, and a
batch runs them for each entry (`service.submission` and `service.batches` record the jobs).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from jobs.registry import UnknownKind as UnknownKindName
from jobs.registry import get_kind, list_kinds
from service.db import MAX_INTEGER
from service.errors import (
    Forbidden,
    InvalidParams,
    InvalidRequest,
    JobNotFound,
    KindDisabled,
    NotFound,
    UnknownDevice,
    UnknownKind,
)
from service.models import DeviceKind, Job, JobStatus, User
from service.scheduling.device_request import DeviceRequest, parse_device_request
from service.scheduling.queue_state import all_devices
from service.schemas import JobCreate
from service.settings import Settings
from service.store.bundles import use_bundle
from service.store.envs import get_env
from service.store.job_records import owns

MEMBER_MAX_PRIORITY = 0


def kind_enabled(name: str, settings: Settings) -> bool:
    """Whether members may submit this kind here (the script kind is off unless enabled)."""
    kind = get_kind(name)
    return not kind.admin_enabled_only or settings.enable_command_kind


def validate_params(kind_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params, checked against the kind's model, with defaults filled in."""
    try:
        kind = get_kind(kind_name)
    except UnknownKindName:
        known = ", ".join(k.name for k in list_kinds())
        raise UnknownKind(f"kind {kind_name!r} does not exist; known kinds: {known}", field="kind",
                          value=kind_name, extra={"known": [k.name for k in list_kinds()]}) from None
    try:
        model = kind.validate(params)
    except ValidationError as exc:
        errors = [
            {"field": "params." + ".".join(str(p) for p in e["loc"]), "value": _scalar(e.get("input")),
             "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        first = errors[0]
        raise InvalidParams(f"{first['field']}: {first['message']} (got {first['value']!r})",
                            field=first["field"], value=first["value"], extra={"errors": errors}) from None
    return model.model_dump(mode="json")


def _scalar(value: Any) -> Any:
    """A value as a problem body can carry it: scalars as they are, the rest as text."""
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def check_device(request: DeviceRequest, raw: str, devices: Sequence[Any]) -> None:
    """Refuse a request that no known device could ever satisfy, listing those that exist."""
    if any(request.matches(device_id=d.id, kind=d.kind, name=d.name, memory_total_mb=d.memory_total_mb)
           for d in devices):
        return
    listing = [{"id": d.id, "kind": d.kind, "name": d.name, "memory_total_mb": d.memory_total_mb,
                "state": d.state} for d in devices]
    names = ", ".join(d.id for d in devices) or "none registered yet"
    raise UnknownDevice(f"no device can run device={raw!r}; devices: {names}",
                        field="device", value=raw, extra={"devices": listing})


def check_declared_memory(request: DeviceRequest, gpu_memory_gb: float, devices: Sequence[Any]) -> None:
    """Refuse declared memory larger than every device the request matches."""
    sizes = [d.memory_total_mb or 0 for d in devices
             if request.matches(device_id=d.id, kind=d.kind, name=d.name, memory_total_mb=d.memory_total_mb)]
    if sizes and max(sizes) < gpu_memory_gb * 1024:
        raise InvalidRequest(f"gpu_memory_gb={gpu_memory_gb:g} is more than the largest matching GPU holds "
                             f"({max(sizes) / 1024:.1f} GiB)", field="gpu_memory_gb", value=gpu_memory_gb)


def check_gang(request: DeviceRequest, body: JobCreate, devices: Sequence[Any]) -> None:
    """Refuse a gang no host could ever hold: more matching devices than any one host has."""
    if body.gpu_memory_gb is not None:
        raise InvalidRequest(f"gpu_memory_gb is for jobs that share a GPU; a job with gpus={body.gpus} holds "
                             "each of its devices alone: leave gpu_memory_gb out", field="gpu_memory_gb",
                             value=body.gpu_memory_gb)
    per_host: dict[str, int] = {}
    for d in devices:
        if request.matches(device_id=d.id, kind=d.kind, name=d.name, memory_total_mb=d.memory_total_mb):
            per_host[d.host] = per_host.get(d.host, 0) + 1
    if max(per_host.values(), default=0) >= body.gpus:
        return
    counts = ", ".join(f"{host} has {n}" for host, n in sorted(per_host.items())) or "no host has any"
    raise InvalidRequest(f"gpus={body.gpus}: no host has {body.gpus} devices matching device={body.device!r} "
                         f"({counts}); ask for fewer, or another device", field="gpus", value=body.gpus,
                         extra={"hosts": per_host})


@dataclass
class Checked:
    """A request that passed every check needing no lock: what the job will be made from."""

    body: JobCreate
    params: dict[str, Any]
    request: DeviceRequest
    timeout_s: int
    max_attempts: int


def check_request(*, session: Session, settings: Settings, user: User, body: JobCreate,
                  devices: Sequence[Any] | None = None) -> Checked:
    """Every check of one request that reads nothing a concurrent submit changes (`devices`: read
    once for a batch's entries, else here)."""
    params = validate_params(body.kind, body.params)
    if not kind_enabled(body.kind, settings):
        raise KindDisabled(f"kind {body.kind!r} is turned off on this server (an admin enables it)",
                           field="kind", value=body.kind)
    if body.priority > MEMBER_MAX_PRIORITY and not user.is_admin:
        raise Forbidden(f"priority {body.priority} is above {MEMBER_MAX_PRIORITY}: only admins may raise it",
                        field="priority", value=body.priority)
    timeout_s = body.timeout_s or settings.default_timeout_s
    if timeout_s > settings.max_timeout_s:
        raise InvalidRequest(f"timeout_s={timeout_s} is above this server's limit of {settings.max_timeout_s}",
                             field="timeout_s", value=timeout_s)
    request = parse_device_request(body.device, default_host=settings.host)
    devices = all_devices(session) if devices is None else devices
    check_device(request, body.device, devices)
    if body.gpu_memory_gb is not None and request.kind == DeviceKind.cpu:
        raise InvalidRequest("gpu_memory_gb is for GPU jobs; this job asks for the CPU",
                             field="gpu_memory_gb", value=body.gpu_memory_gb)
    if body.gpu_memory_gb is not None:
        check_declared_memory(request, body.gpu_memory_gb, devices)
    if body.gpus > 1:
        check_gang(request, body, devices)
    max_attempts = body.max_attempts or settings.max_attempts
    if body.kind == "command" and not params.get("requeue"):
        # A member's code may not be safe to run twice: a lost worker re-runs it only if asked.
        max_attempts = 1
    return Checked(body, params, request, timeout_s, max_attempts)


def new_job(*, session: Session, settings: Settings, user: User, checked: Checked,
            idempotency_key: str | None = None) -> Job:
    """The pending job a checked request makes, once its source job and command are checked too."""
    body, params = checked.body, checked.params
    from_job_id = _from_job(session, body.kind, params, user)
    if body.kind == "command":
        _check_command(session, params, user, settings)
    return Job(
        owner_id=user.id,
        kind=body.kind,
        params=params,
        **checked.request.columns(),
        gpus=body.gpus,
        priority=body.priority,
        gpu_memory_gb=body.gpu_memory_gb,
        timeout_s=checked.timeout_s,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        max_attempts=checked.max_attempts,
        idempotency_key=idempotency_key,
        from_job_id=from_job_id,
        status=JobStatus.pending,
    )


def _from_job(session: Session, kind_name: str, params: dict[str, Any], user: User) -> int | None:
    """The earlier job whose checkpoint this one starts from, checked to exist and be done."""
    param = get_kind(kind_name).from_job_param
    if not param or params.get(param) is None:
        return None
    source_id = int(params[param])
    field = f"params.{param}"
    # An id past the column's range names no job; asking the database would be an error.
    source = session.get(Job, source_id) if 0 < source_id <= MAX_INTEGER else None
    if source is None:
        raise JobNotFound(f"{field}: no job has id {source_id}", field=field, value=source_id)
    if not owns(user, source):
        # Its checkpoint is one of its artifacts, which are its owner's (readable_job).
        raise Forbidden(f"{field}: job {source_id} belongs to another member: start from a job of your own",
                        field=field, value=source_id)
    if source.status != JobStatus.succeeded:
        raise InvalidParams(f"{field}: job {source_id} is {source.status}, not succeeded",
                            field=field, value=source_id)
    return source_id


def _check_command(session: Session, params: dict[str, Any], user: User, settings: Settings) -> None:
    """A command job's bundle is the member's own, its server folder allowed, its Python environment known."""
    if params.get("server_dir"):
        allowed = settings.server_dirs
        path = Path(params["server_dir"])
        if not any(path == root or root in path.parents for root in allowed):
            where = ", ".join(map(str, allowed)) or "none (GPULAB_COMMAND_SERVER_DIRS is empty)"
            raise InvalidParams(f"params.server_dir: {path} is not under a folder an admin allows ({where}); "
                                "upload your folder with --working-dir instead", field="params.server_dir",
                                value=str(path))
    if params.get("bundle"):
        use_bundle(session=session, sha256=params["bundle"], user=user)
    if params.get("python_env"):
        try:
            get_env(session=session, name=params["python_env"])
        except NotFound as exc:
            raise InvalidParams(f"params.python_env: {exc.detail}", field="params.python_env",
                                value=params["python_env"]) from None
