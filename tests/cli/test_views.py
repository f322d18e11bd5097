"""Terminal views: what `gpulab devices` and `gpulab top` print for a gang."""

from __future__ import annotations

from rich.console import Console

from cli.views import top_view


def test_top_shows_a_gang_on_each_of_its_devices_and_counts_it_once() -> None:
    gang = {"id": 7, "owner": "ada", "kind": "command", "status": "running", "gpu_memory_gb": None}
    devices = [{"id": f"lab/cuda:{i}", "name": "NVIDIA H100", "state": "online", "jobs": [gang]} for i in (0, 1)]
    console = Console(width=160, record=True)
    console.print(top_view(devices, {"items": [], "total": 0, "matching": 0, "dispatcher_active": True}))
    text = console.export_text()
    assert "2 device(s), 1 running, 0 pending" in text, text
    assert text.count("7 ada command") == 2, text
