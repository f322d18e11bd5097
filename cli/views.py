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


def queue_table(queue: dict[str, Any], limit: int = 10) -> Table:
    table = Table("#", "job", "owner", "kind", "device", "waiting", "reason", box=None, title="queue",
                  title_justify="left")
    for e in queue["items"][:limit]:
        table.add_row(str(e["position"]), str(e["job_id"]), e["owner"], e["kind"], e["device_request"],
                      f"{e['waiting_s']:.0f}s", e["reason"] or f"starts on {e['next_device']}")
    return table


def top_view(devices: list[dict[str, Any]], queue: dict[str, Any]) -> Group:
    """One frame of `gpulab top`: the devices, then the head of the queue."""
    pending = len(queue["items"])
    running = sum(1 for d in devices for j in d["jobs"] if j["status"] == "running")
    head = Text(f"gpulab: {len(devices)} device(s), {running} running, {pending} pending", style="bold")
    if not queue["dispatcher_active"]:
        head.append("  no dispatcher is active", style="red")
    return Group(head, devices_table(devices), queue_table(queue))


def usage_table(report: dict[str, Any]) -> Table:
    """Device-hours allocated and used, outcomes and mean wait per member, device or kind."""
    table = Table(report["group_by"], "jobs", "outcomes", "GPU-h", "GPU-h used", "CPU-h", "mean wait", box=None)
    for r in report["rows"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        wait = "–" if r["mean_wait_s"] is None else f"{r['mean_wait_s']:.1f}s"
        table.add_row(r["key"], str(r["jobs"]), outcomes, f"{r['gpu_hours']:.2f}", f"{r['gpu_used_hours']:.2f}",
                      f"{r['cpu_hours']:.2f}", wait)
    return table
