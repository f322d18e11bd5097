"""Tables for `gpulab devices`, `gpulab top` and `gpulab usage`, in the spirit of nvitop and gpustat."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 20


def bar(fraction: float | None, label: str, *, style: str = "cyan") -> Text:
    """A bar of block characters with a label after it; an empty track when unknown."""
    text = Text()
    if fraction is None:
        text.append("░" * BAR_WIDTH, style="dim")
        return text.append(" –", style="dim")
    fraction = max(0.0, min(1.0, fraction))
    full = round(fraction * BAR_WIDTH)
    hot = "red" if fraction >= 0.9 else style
    text.append("█" * full, style=hot).append("░" * (BAR_WIDTH - full), style="dim")
    return text.append(f" {label}")


def _mib(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1024:.1f}G" if v >= 1024 else f"{v:.0f}M"


def devices_table(devices: list[dict[str, Any]]) -> Table:
    """Each device: state, utilisation and memory bars, temperature and power, its jobs and members."""
    table = Table("device", "state", "utilisation", "memory", "temp", "power", "jobs", box=None, pad_edge=False)
    for d in devices:
        util = d.get("utilization_pct")
        used, total = d.get("memory_used_mb"), d.get("memory_total_mb")
        mem_frac = used / total if used is not None and total else None
        state_style = {"online": "green", "offline": "red", "draining": "yellow"}.get(d["state"], "")
        jobs = Text()
        for j in d["jobs"]:
            jobs.append(f"{j['id']} ", style="bold").append(f"{j['owner']} {j['kind']}  ")
        if not d["jobs"]:
            jobs.append("idle", style="dim")
        name = Text(d["id"], style="bold").append(f"\n{d['name'][:40]}", style="dim")
        temp = "–" if d.get("temperature_c") is None else f"{d['temperature_c']:.0f}°C"
        power = "–" if d.get("power_w") is None else f"{d['power_w']:.0f}W"
        table.add_row(name, Text(d["state"], style=state_style),
                      bar(None if util is None else util / 100, f"{util:.0f}%" if util is not None else ""),
                      bar(mem_frac, f"{_mib(used)}/{_mib(total)}", style="magenta"), temp, power, jobs)
    return table


def status_text(status: str, reason: str | None) -> str:
    """A job's status with its reason, unless the reason only repeats it (`cancelled`)."""
    return status if not reason or reason == status else f"{status} ({reason})"


def queue_device(entry: dict[str, Any]) -> str:
    """What a queued job asks for: `2 × gpu` for a gang."""
    gpus = entry.get("gpus", 1)
    return entry["device_request"] if gpus == 1 else f"{gpus} × {entry['device_request']}"


def queue_reason(entry: dict[str, Any]) -> str:
    """Why a queued job waits; a gang assembling says how many of its devices are free already."""
    if entry.get("gang_ready") is not None:
        return f"{entry['reason']} ({entry['gang_ready']} of {entry.get('gpus', 1)} free)"
    return entry["reason"] or f"starts on {entry['next_device']}"


# The facts of a device's runtime, in the order a reader compares them.
RUNTIME_FACTS = ("torch", "cuda_runtime", "cudnn", "nccl", "driver", "cuda_driver", "compute_capability",
                 "memory_total_mb", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision", "torch_threads",
                 "python", "numpy", "platform", "os")


def runtime_table(devices: list[dict[str, Any]]) -> Table:
    """One column per device: the software its worker reported (what a result depends on)."""
    table = Table("", *(d["id"] for d in devices), box=None, pad_edge=False, title="runtime", title_justify="left")
    for fact in RUNTIME_FACTS:
        values = [(d.get("runtime") or {}).get(fact) for d in devices]
        if any(v is not None for v in values):
            table.add_row(fact, *("–" if v is None else str(v) for v in values))
    return table


def queue_table(queue: dict[str, Any], limit: int = 10) -> Table:
    table = Table("#", "job", "owner", "kind", "device", "waiting", "reason", box=None, title="queue",
                  title_justify="left")
    for e in queue["items"][:limit]:
        table.add_row(str(e["position"]), str(e["job_id"]), e["owner"], e["kind"], queue_device(e),
                      f"{e['waiting_s']:.0f}s", queue_reason(e))
    return table


def top_view(devices: list[dict[str, Any]], queue: dict[str, Any]) -> Group:
    """One frame of `gpulab top`: the devices, then the head of the queue."""
    pending = queue["total"]
    running = len({j["id"] for d in devices for j in d["jobs"] if j["status"] == "running"})  # a gang once
    head = Text(f"gpulab: {len(devices)} device(s), {running} running, {pending} pending", style="bold")
    if not queue["dispatcher_active"]:
        head.append("  no dispatcher is active", style="red")
    return Group(head, devices_table(devices), queue_table(queue))


def device_time(hours: float) -> str:
    """Device time in the unit that shows it: a lab's first week of minutes-long jobs read 0.00 h."""
    seconds = hours * 3600
    if seconds == 0:
        return "0"
    if hours >= 1:
        return f"{hours:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def usage_heading(report: dict[str, Any]) -> str:
    """The window in UTC: cutting the time stamp's offset off showed `--since 10:00+05:00` as 10:00."""
    from datetime import UTC, datetime

    since = datetime.fromisoformat(report["since"].replace("Z", "+00:00")).astimezone(UTC)
    return f"usage since {since:%Y-%m-%d %H:%M:%S} UTC by {report['group_by']}"


def usage_table(report: dict[str, Any]) -> Table:
    """Device time allocated and used, outcomes and mean wait per member, device or kind (`--json`: hours)."""
    table = Table(report["group_by"], "jobs", "outcomes", "GPU time", "GPU used", "CPU time", "CPU used", "mean wait",
                  box=None)
    for r in report["rows"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        wait = "–" if r["mean_wait_s"] is None else f"{r['mean_wait_s']:.1f}s"
        table.add_row(r["key"], str(r["jobs"]), outcomes, *(device_time(r[k]) for k in (
            "gpu_hours", "gpu_used_hours", "cpu_hours", "cpu_used_hours")), wait)
    return table


def _cell(value: Any) -> str:
    """A result value for a table cell: numbers short, lists and dicts as compact JSON."""
    import json

    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(", ", ": "))
        return text if len(text) <= 100 else text[:97] + "…"
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # what -p takes back: null, true, false
    return str(value)


def _span(seconds: float | None, since: str | None) -> str:
    """A finished span ("12.3 s", "19 min 44 s"), or one still going since a timestamp ("… so far")."""
    from datetime import UTC, datetime

    if seconds is None and since:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
        start = start if start.tzinfo else start.replace(tzinfo=UTC)  # the API's times are UTC
        seconds = max(0.0, (datetime.now(UTC) - start).total_seconds())
        return f"{_seconds(seconds)} so far"
    return "–" if seconds is None else _seconds(seconds)


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def job_summary(job: dict[str, Any]) -> Group:
    """`gpulab show`: status and reason, times, device, params and result as tables."""
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(job["status"], "cyan")
    head = Text(f"job {job['id']} ", style="bold").append(job["kind"]).append("  ")
    head.append(status_text(job["status"], job.get("reason")), style=f"bold {colour}")
    facts = Table(box=None, show_header=False, pad_edge=False)
    facts.add_column(style="dim")
    facts.add_column()
    rows: list[tuple[str, Any]] = [
        ("owner", job["owner"]),
        ("device", job.get("device_id") or f"{job['device_request']} (requested)"),
        ("submitted", (job.get("created_at") or "")[:19].replace("T", " ")),
        ("started", (job.get("started_at") or "–")[:19].replace("T", " ")),
        ("finished", (job.get("finished_at") or "–")[:19].replace("T", " ")),
        ("waited", _span(job.get("wait_seconds"), job.get("created_at") if job["status"] == "pending" else None)),
        ("ran", _span(job.get("run_seconds"), job.get("started_at") if job["status"] == "running" else None)),
        ("attempt", f"{job['attempt']} of at most {job['max_attempts']}"),
        ("seed", job["seed"]),
    ]
    if job.get("peak_memory_mb") is not None:
        rows.append(("peak GPU memory", _mib(job["peak_memory_mb"])))
    if job.get("cancelled_by"):
        rows.append(("cancelled by", job["cancelled_by"]))
    progress = job.get("progress") or {}
    if progress.get("total"):
        rows.append(("progress", f"{progress.get('step', 0)}/{progress['total']}"))
    rows += command_rows(job.get("command"))
    for name, value in rows:
        facts.add_row(name, str(value))
    parts: list[Any] = [head, facts]
    if job.get("params") and not job.get("command"):
        params = Table("param", "value", box=None, pad_edge=False, title="params", title_justify="left")
        for k, v in job["params"].items():
            params.add_row(k, _cell(v))
        parts.append(params)
    if job.get("result"):
        result = Table("result", "value", box=None, pad_edge=False, title="result", title_justify="left")
        for k, v in job["result"].items():
            result.add_row(k, _cell(v))
        parts.append(result)
    if job.get("error"):
        parts.append(Text(f"error: {job['error']}", style="red"))
    return Group(*parts)


def command_rows(command: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """A command job's facts for `gpulab show`: the command, its account, environment and bundle."""
    if not command:
        return []
    import shlex

    bundle = command.get("bundle")
    if bundle is None:
        where = "an empty folder"
    elif bundle.get("size_bytes") is None:
        where = f"bundle {bundle['sha256'][:12]} (expired)"
    else:
        size = bundle["size_bytes"]
        shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"
        files = f"{bundle['files']} file" + ("" if bundle["files"] == 1 else "s")
        where = f"bundle {bundle['sha256'][:12]}: {files}, {shown}"
    rows: list[tuple[str, Any]] = [("command", shlex.join(command["argv"])), ("unix account", command["unix_user"]),
                                   ("python env", command["python_env"]), ("working dir", where)]
    rows += [(f"env {k}", v) for k, v in command.get("env", {}).items()]
    if command.get("requeue"):
        rows.append(("requeue", "rerun if its worker is lost"))
    return rows
