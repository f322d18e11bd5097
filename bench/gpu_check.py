"""gpulab's check on a real GPU: pinning, NVML inventory, warm start, memory caps, OOM recovery,
cancel, and throughput. One run, one report.

    bash .bundle/install.sh && python3 bench/gpu_check.py --out $OUT

Writes gpu_check.json (every check with its numbers and pass/fail) and gpu_check.log to --out.
`--allow-cpu` runs the same plumbing against a CPU worker, to try the script without a GPU
(the GPU-only checks are then skipped, and the throughput checks run small sizes: CI runs it so,
so that the one run a lent GPU allows does not find the script itself broken). The exit status is
1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Report:
    def __init__(self, out: Path):
        self.out = out
        self.checks: list[dict[str, Any]] = []
        self.log = open(out / "gpu_check.log", "a")  # noqa: SIM115 - open for the whole run

    def say(self, text: str) -> None:
        line = f"[{datetime.now():%H:%M:%S}] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def check(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.monotonic()
        try:
            data = fn()
            ok = bool(data.pop("ok", True))
        except Exception as exc:
            data, ok = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}, False
        entry = {"check": name, "ok": ok, "seconds": round(time.monotonic() - t0, 2), **data}
        self.checks.append(entry)
        shown = {k: v for k, v in data.items() if k != "traceback"}
        self.say(f"{'PASS' if ok else 'FAIL'} {name}: {json.dumps(shown)}")
        self.save()

    def skip(self, name: str, why: str) -> None:
        self.checks.append({"check": name, "ok": None, "skipped": why})
        self.say(f"SKIP {name}: {why}")

    def save(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps({"checks": self.checks}, indent=2))


def ensure_installed(report: Report) -> None:
    """Entry points (the test kinds) need gpulab and the test kinds installed, not just importable."""
    from importlib.metadata import entry_points

    if any(ep.name == "test-alloc" for ep in entry_points(group="gpulab.jobs")):
        return
    site = os.environ.get("GPULAB_SITE", "/tmp/site")
    report.say(f"installing gpulab and its test kinds into {site} (offline)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation",
                    "--upgrade", "--target", site, str(REPO), str(REPO / "tests" / "plugin_kinds")], check=True)
    import importlib

    importlib.invalidate_caches()


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def nvml_used_mb(index: int = 0) -> float:
    import pynvml

    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    parser.add_argument("--allow-cpu", action="store_true", help="try the plumbing on a CPU worker")
    parser.add_argument("--skip-pytest", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    import torch

    gpu = torch.cuda.is_available()
    report.say(f"torch {torch.__version__}, CUDA available: {gpu}")
    if not gpu and not args.allow_cpu:
        report.say("no GPU: nothing to check (use --allow-cpu to try the plumbing)")
        report.save()
        sys.exit(2)
    # The check's own process must not hold a CUDA context on the card it measures.
    ensure_installed(report)
    device = "cuda:0" if gpu else "cpu"

    def inventory() -> dict[str, Any]:
        from worker.device import count_gpus, gpu_info

        info = gpu_info("gpucheck", 0)
        return {"gpus": count_gpus(), "name": info.name, "uuid": info.uuid, "memory_total_mb": info.memory_total_mb,
                "ok": bool(info.uuid and info.memory_total_mb)}

    if gpu:
        report.check("nvml inventory", inventory)

    from tests.support import services
    from tests.support.stack import Stack

    tmp = Path(tempfile.mkdtemp(prefix="gpulab-gpu-check-"))
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=services.redis_url(3), state_dir=tmp,
                  env={"GPULAB_HOST": "gpucheck"})
    stack.start(workers=())
    try:
        device_id = stack.add_worker(device, host="gpucheck", slots=2)
        row = next(d for d in stack.api("GET", "/devices") if d["id"] == device_id)
        report.say(f"worker registered {row['id']}: {row['name']} {row['uuid']} {row['memory_total_mb']} MB")

        def run(kind: str, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
            return stack.wait_for(stack.submit(kind, params, device=device_id, **fields)["id"], timeout=300)

        def pinning() -> dict[str, Any]:
            job = run("test-alloc", {"mb": 16})
            res = job["result"] or {}
            ok = job["status"] == "succeeded" and (not gpu or (res.get("device_count") == 1
                                                               and res.get("visible_devices") == row["uuid"]))
            return {"ok": ok, "status": job["status"], "result": res}

        def warm_start() -> dict[str, Any]:
            starts = []
            for _ in range(6):
                job = run("test-alloc", {"mb": 1})
                starts.append(1000 * (ts(job["started_at"]) - ts(job["dispatched_at"])))
            return {"dispatch_to_start_ms": [round(s, 1) for s in starts],
                    "first_ms": round(starts[0], 1), "warm_median_ms": round(sorted(starts[1:])[2], 1)}

        def shared_caps() -> dict[str, Any]:
            total_gb = (row["memory_total_mb"] or 0) / 1024
            share = max(1.0, round(total_gb / 4, 1))
            a = stack.submit("test-alloc", {"mb": 1024, "hold_s": 6}, device=device_id, gpu_memory_gb=share)
            b = stack.submit("test-alloc", {"mb": 1024, "hold_s": 6}, device=device_id, gpu_memory_gb=share)
            over = stack.submit("test-alloc", {"mb": int(share * 1024 * 1.5)}, device=device_id, gpu_memory_gb=share)
            ja, jb, jo = (stack.wait_for(j["id"], timeout=300) for j in (a, b, over))
            overlap = (min(ts(ja["finished_at"]), ts(jb["finished_at"]))
                       - max(ts(ja["started_at"]), ts(jb["started_at"])))
            after = run("test-alloc", {"mb": 256}, gpu_memory_gb=share)
            ok = (ja["status"] == jb["status"] == "succeeded" and overlap > 0 and jo["status"] == "failed"
                  and jo["reason"] == "oom" and after["status"] == "succeeded")
            return {"ok": ok, "share_gb": share, "overlap_s": round(overlap, 2),
                    "over_cap": [jo["status"], jo["reason"]],
                    "over_cap_error": (jo["error"] or "")[-300:], "next_job_after_oom": after["status"],
                    "pids": [ja["result"]["pid"], jb["result"]["pid"]]}

        def cancel_returns_memory() -> dict[str, Any]:
            before = nvml_used_mb()
            job = stack.submit("test-alloc", {"mb": 8192, "hold_s": 120}, device=device_id)
            stack.wait_for(job["id"], ("running",))
            time.sleep(2)
            during = nvml_used_mb()
            stack.api("POST", f"/jobs/{job['id']}/cancel")
            done = stack.wait_for(job["id"])
            time.sleep(1)
            after = nvml_used_mb()
            return {"ok": done["status"] == "cancelled" and during - after > 6000, "used_mb_before": round(before),
                    "during": round(during), "after": round(after)}

        def throughput() -> dict[str, Any]:
            job = run("device-compare", {"sizes": [256, 1024, 2048, 4096] if gpu else [256, 512]}, timeout_s=600)
            res = job["result"] or {}
            ratio = (res.get("kind_gflops") or 0) / (res.get("direct_torch_gflops") or float("inf"))
            # Goal on a GPU: the kind's GFLOP/s within 5 % of direct torch in the same process.
            ok = job["status"] == "succeeded" and (not gpu or abs(ratio - 1) <= 0.05)
            return {"ok": ok, "kind_vs_direct_torch": round(ratio, 3), "result": res}

        report.check("pinning", pinning)
        report.check("warm start", warm_start)
        if gpu:
            report.check("two capped jobs share, over-cap fails alone, oom recovery", shared_caps)
            report.check("cancel returns memory", cancel_returns_memory)
        else:
            report.skip("memory caps", "no GPU")
        report.check("device-compare throughput", throughput)
    finally:
        stack.stop()

    def loader_bench() -> dict[str, Any]:
        small = [] if gpu else ["--epochs", "1", "--repeats", "1"]
        r = subprocess.run([sys.executable, str(REPO / "bench" / "classify_loader.py"), "--device", device, *small],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
        return {"ok": r.returncode == 0, "output": r.stdout[-1500:] + r.stderr[-500:]}

    report.check("classify-digits on device vs DataLoader", loader_bench)

    if not args.skip_pytest:
        def gpu_tests() -> dict[str, Any]:
            r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                "tests"], capture_output=True, text=True, timeout=400, cwd=REPO)
            return {"ok": r.returncode == 0, "output": r.stdout[-3000:]}

        report.check("pytest -m gpu", gpu_tests)
    report.save()
    failed = [c["check"] for c in report.checks if c.get("ok") is False]
    report.say(f"done: {len(report.checks)} checks, failed: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
