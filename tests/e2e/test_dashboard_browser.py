"""The dashboard in a real browser (Debian's chromium driven by Playwright): log in, submit a
regression job from the form built from its JSON Schema, watch it succeed, and see its loss
curve, the device row, the workers and the usage charts drawn.

Screenshots go to GPULAB_SCREENSHOTS_DIR when set (docs/screenshots/ holds the committed ones),
else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import next_redis_url
from tests.support import services
from tests.support.stack import Stack

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("GPULAB_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own whose worker samples its device twice a second."""
    tmp = tmp_path_factory.mktemp("ui-stack")
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=next_redis_url(), state_dir=tmp,
                  env={"GPULAB_SAMPLE_S": "0.5"})
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        services.unavailable(f"Chromium at {CHROMIUM} (scripts/install_browser.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        services.unavailable("the playwright package (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("GPULAB_SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def polyline_points(page, selector: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(n) for n in page.eval_on_selector_all(f"{selector} polyline", "els => els.map(e => e.dataset.points)")]


def test_dashboard_end_to_end(browser, ui_stack: Stack, shots: Path) -> None:  # type: ignore[no-untyped-def]
    # (browser first: without chromium the test skips before a stack starts)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    failed_requests: list[str] = []
    page.on("requestfailed", lambda r: failed_requests.append(r.url) if "/events" not in r.url else None)

    # Log in: a wrong token is refused with a message, the right one is kept in localStorage.
    page.goto(ui_stack.url + "/")
    page.fill("#token", "not-a-token")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:has-text('refused')")
    page.fill("#token", ui_stack.token)
    page.click("#login-form button")
    page.wait_for_selector("#who:has-text('admin')")
    assert page.evaluate("localStorage.getItem('gpulab.token')") == ui_stack.token

    # Devices: the CPU device's row with its reading and a utilisation chart with points.
    device = page.locator('[data-device="testhost/cpu"]')
    device.wait_for()
    assert "online" in device.inner_text()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-device="testhost/cpu"] polyline')]
                 .some(p => +p.dataset.points >= 2)""")
    page.screenshot(path=str(shots / "devices.png"))

    # Submit a small regression run from the form built from the kind's JSON Schema.
    page.goto(ui_stack.url + "/#/submit")
    page.select_option("#kind", "regression")
    page.wait_for_selector("#param-steps")
    assert page.get_attribute("#param-steps", "max") == "200000"
    page.fill("#param-steps", "150")
    page.fill("#param-eval_every", "10")
    page.fill("#param-n_train", "128")
    page.fill("#param-n_val", "128")
    page.screenshot(path=str(shots / "submit.png"))
    page.click("#submit")
    page.wait_for_url("**/#/jobs/*")
    job_id = int(page.url.rsplit("/", 1)[1])
    job = ui_stack.wait_for(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    # What the form changed went through; the rest kept the kind's defaults.
    assert {k: job["params"][k] for k in ("steps", "eval_every", "n_train", "n_val", "lr")} == {
        "steps": 150, "eval_every": 10, "n_train": 128, "n_val": 128, "lr": 0.01}

    # The job page: succeeded, its loss curve drawn with every step, the log, the PNG previews.
    page.wait_for_selector("#job-head .badge.succeeded")
    page.wait_for_function(
        """() => { const p = document.querySelector('[data-metric="loss"] polyline');
                   return p && +p.dataset.points >= 150; }""")
    assert page.locator('[data-metric="loss"] circle.point').count() == 150  # a dot per step
    assert polyline_points(page, '[data-metric="val_mse"]') == [15]
    page.wait_for_function("() => document.querySelectorAll('#job-artifacts img').length >= 2 && "
                           "[...document.querySelectorAll('#job-artifacts img')].every(i => i.naturalWidth > 0)")
    page.wait_for_selector("#job-log:has-text('noise variance')")
    page.wait_for_selector("#efficiency-summary:has-text('mean utilisation')")
    assert page.locator("#job-timeline .step").count() >= 3  # pending, dispatched, running, succeeded
    page.screenshot(path=str(shots / "job.png"), full_page=True)

    # Clone and resubmit opens the form filled with this job's kind and params.
    page.click("#clone")
    page.wait_for_selector(f"h1:has-text('Clone job #{job_id}')")
    assert page.input_value("#param-steps") == "150" and page.input_value("#kind") == "regression"

    # Overlay a second run's loss curve on the first.
    other = ui_stack.submit("regression", {"steps": 60, "lr": 0.003, "eval_every": 20, "n_train": 64, "n_val": 64})
    ui_stack.wait_for(other["id"], ("succeeded",), timeout=120)
    page.goto(f"{ui_stack.url}/#/jobs/{job_id}?compare={other['id']}")
    page.wait_for_function(
        """() => document.querySelectorAll('[data-metric="loss"] polyline').length === 2""")
    assert sorted(polyline_points(page, '[data-metric="loss"]')) == [60, 150]
    page.locator("#job-metrics").screenshot(path=str(shots / "compare.png"))

    # Jobs list, filtered by kind; the queue; the workers.
    page.goto(ui_stack.url + "/#/jobs?kind=regression")
    page.wait_for_selector(f'#jobs-table tr[data-job="{job_id}"]')
    assert page.locator("#jobs-table tr[data-job]").count() == 2
    page.screenshot(path=str(shots / "jobs.png"))
    page.goto(ui_stack.url + "/#/queue")
    page.wait_for_selector("#queue:has-text('The queue is empty')")
    page.goto(ui_stack.url + "/#/workers")
    page.wait_for_selector("#workers td:has-text('testhost/cpu')")
    page.screenshot(path=str(shots / "workers.png"))

    # Usage: CPU-hours per member as bars, and the queue over time as lines.
    page.goto(ui_stack.url + "/#/usage?since=24h")
    page.wait_for_selector("#usage-member svg rect")
    assert page.locator("#usage-member svg rect").count() == 2  # allocated and used for admin
    page.wait_for_selector("#usage-queue polyline", state="attached")
    assert min(polyline_points(page, "#usage-queue")) >= 50  # queue depth and running, over 24 h
    page.wait_for_selector("#usage-rows td:has-text('admin')")
    assert "succeeded" in page.inner_text("#usage-rows")
    page.screenshot(path=str(shots / "usage.png"), full_page=True)

    assert errors == [], errors
    assert failed_requests == [], failed_requests
    context.close()
