"""The dashboard in a real browser (Debian's chromium driven by Playwright): log in, submit a
regression job from the form built from its JSON Schema, watch it succeed, and see its loss
curve, the device row, the workers and the usage charts drawn.

Screenshots go to GPULAB_SCREENSHOTS_DIR when set (docs/screenshots/ holds the committed ones),
else to the test's temporary directory.
"""

from __future__ import annotations

import json
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
    """A stack of this module's own whose worker samples its device twice a second (command jobs on)."""
    tmp = tmp_path_factory.mktemp("ui-stack")
    stack = Stack(database_url=f"sqlite:///{tmp / 'gpulab.sqlite3'}", redis_url=next_redis_url(), state_dir=tmp,
                  env={"GPULAB_SAMPLE_S": "0.5", "GPULAB_ENABLE_COMMAND_KIND": "true"})
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


def signed_in(browser, token: str, url: str):  # type: ignore[no-untyped-def]
    """A page of a new browser context signed in with `token`, opened at `url`; with the list its
    uncaught script errors go to."""
    context = browser.new_context()
    context.add_init_script(f"localStorage.setItem('gpulab.token', {token!r})")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return context, page, errors


def polyline_points(page, selector: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(n) for n in page.eval_on_selector_all(f"{selector} polyline", "els => els.map(e => e.dataset.points)")]


# Every label of every chart on the page lies inside its chart (none clipped at an edge).
CLIPPED_LABELS = """() => [...document.querySelectorAll('svg.chart')].flatMap(svg => {
    const box = svg.getBoundingClientRect();
    return [...svg.querySelectorAll('text')].filter(t => {
        const b = t.getBoundingClientRect();  // after transforms (a rotated axis title)
        return b.left < box.left - 1 || b.top < box.top - 1 || b.right > box.right + 1 || b.bottom > box.bottom + 1;
    }).map(t => t.textContent);
})"""


def test_dashboard_end_to_end(browser, ui_stack: Stack, shots: Path) -> None:  # type: ignore[no-untyped-def]
    # (browser first: without chromium the test skips before a stack starts)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    failed_requests: list[str] = []
    page.on("requestfailed",
            lambda r: failed_requests.append(f"{r.url} {r.failure}") if "/events" not in r.url else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # Log in: a wrong token is refused with a message, the right one is kept in localStorage.
    page.goto(ui_stack.url + "/")
    assert page.get_attribute("link[rel=icon]", "href") == "/dashboard/favicon.svg"
    page.fill("#token", "not-a-token")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:has-text('refused')")
    page.fill("#token", ui_stack.token)
    page.click("#login-form button")
    page.wait_for_selector("#who:has-text('admin')")
    assert page.evaluate("localStorage.getItem('gpulab.token')") == ui_stack.token

    # Devices: the CPU device's row with its reading and a utilisation chart with points; a CPU's
    # utilisation is the whole host's, and says so.
    device = page.locator('[data-device="testhost/cpu"]')
    device.wait_for()
    assert "online" in device.inner_text() and "host CPU utilisation" in device.inner_text()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-device="testhost/cpu"] polyline')]
                 .some(p => +p.dataset.points >= 2)""")
    assert "(whole host)" in device.inner_text()
    page.screenshot(path=str(shots / "devices.png"))

    # Submit a small regression run from the form built from the kind's JSON Schema, with a seed.
    page.goto(ui_stack.url + "/#/submit")
    page.select_option("#kind", "regression")
    page.wait_for_selector("#param-steps")
    assert page.get_attribute("#param-steps", "max") == "200000"
    page.fill("#param-steps", "150")
    page.fill("#param-eval_every", "10")
    page.fill("#param-n_train", "128")
    page.fill("#param-n_val", "128")
    page.fill("#seed", "1234")
    page.fill("#timeout_s", "300")
    page.screenshot(path=str(shots / "submit.png"), full_page=True)
    page.click("#submit")
    page.wait_for_url("**/#/jobs/*")
    job_id = int(page.url.rsplit("/", 1)[1])
    job = ui_stack.wait_for(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    # What the form changed went through; the rest kept the kind's defaults.
    assert {k: job["params"][k] for k in ("steps", "eval_every", "n_train", "n_val", "lr")} == {
        "steps": 150, "eval_every": 10, "n_train": 128, "n_val": 128, "lr": 0.01}
    assert (job["seed"], job["timeout_s"]) == (1234, 300)

    # The finished job's page reads its log and its metrics in their own requests, no stream.
    page.goto(f"{ui_stack.url}/#/queue")
    page.wait_for_selector("#queue")
    requests.clear()
    page.goto(f"{ui_stack.url}/#/jobs/{job_id}")
    page.wait_for_selector("#job-head .badge.succeeded")
    page.wait_for_function(
        """() => { const p = document.querySelector('[data-metric="loss"] polyline');
                   return p && +p.dataset.points >= 150; }""")
    assert page.locator('[data-metric="loss"] circle.point').count() == 150  # a dot per step
    assert polyline_points(page, '[data-metric="val_mse"]') == [15]
    # Steps are integers: no "12.5" on a step axis.
    ticks = page.eval_on_selector_all('[data-metric="val_mse"] text.x-tick', "els => els.map(e => e.textContent)")
    assert ticks and all(t.isdigit() for t in ticks), ticks
    page.wait_for_function("() => document.querySelectorAll('#job-artifacts img').length >= 2 && "
                           "[...document.querySelectorAll('#job-artifacts img')].every(i => i.naturalWidth > 0)")
    page.wait_for_selector("#job-log:has-text('noise variance')")
    page.wait_for_selector("#efficiency-summary:has-text('mean CPU utilisation of the whole host')")
    assert "peak GPU memory: none (a CPU job)" in page.inner_text("#efficiency-summary")
    assert page.locator("#job-timeline .step").count() >= 3  # pending, dispatched, running, succeeded
    assert page.locator("#job-result dl.kv dt").count() >= 2  # the result as a list, not one line of JSON
    assert any(f"/jobs/{job_id}/log" in u for u in requests) and any("/metrics/series" in u for u in requests)
    assert not any("/events?after" in u for u in requests), [u for u in requests if "/events" in u]
    assert page.evaluate(CLIPPED_LABELS) == []
    page.screenshot(path=str(shots / "job.png"), full_page=True)

    # Clone and resubmit opens the form filled with this job's kind, params, seed and limits.
    page.click("#clone")
    page.wait_for_selector(f"h1:has-text('Clone job #{job_id}')")
    assert page.input_value("#param-steps") == "150" and page.input_value("#kind") == "regression"
    assert (page.input_value("#seed"), page.input_value("#timeout_s"), page.input_value("#priority")) == (
        "1234", "300", "0")

    # Overlay a second run's loss curve on the first; the legend names the params that differ.
    other = ui_stack.submit("regression", {"steps": 60, "lr": 0.003, "eval_every": 20, "n_train": 64, "n_val": 64})
    ui_stack.wait_for(other["id"], ("succeeded",), timeout=120)
    page.goto(f"{ui_stack.url}/#/jobs/{job_id}?compare={other['id']}")
    page.wait_for_function(
        """() => document.querySelectorAll('[data-metric="loss"] polyline').length === 2""")
    assert sorted(polyline_points(page, '[data-metric="loss"]')) == [60, 150]
    legend = page.inner_text('[data-metric="loss"] .legend')
    assert "lr=0.003" in legend and "lr=0.01" in legend and "steps=60" in legend and "n_train=64" in legend
    assert "seed" not in legend  # a param both share is not repeated
    page.locator("#job-metrics").screenshot(path=str(shots / "compare.png"))

    # Many points: 5,000 metric values come as 500 buckets with their min–max band; 450 log lines
    # come as the last 200, and the earlier ones on demand.
    echo = ui_stack.submit("test-echo", {"steps": 5000, "lines": 450})
    ui_stack.wait_for(echo["id"], ("succeeded",), timeout=120)
    page.goto(f"{ui_stack.url}/#/jobs/{echo['id']}")
    page.wait_for_selector('[data-metric="loss"] polygon.band', state="attached")
    assert polyline_points(page, '[data-metric="loss"]') == [500]
    assert "of 5,000 values" in page.inner_text('[data-metric="loss"]')
    page.wait_for_selector("#job-log:has-text('hello 449')")
    assert "hello 249" not in page.inner_text("#job-log")
    page.click("#log-earlier")
    page.wait_for_selector("#job-log:has-text('hello 249')")
    page.click('[data-metric="loss"] button:has-text("show every value")')
    page.wait_for_function("""() => +document.querySelector('[data-metric="loss"] polyline').dataset.points === 5000""")

    # Results as tables: a classifier's confusion matrix (and its plot), a GAN's history.
    digits = ui_stack.submit("classify-digits", {"epochs": 2}, seed=7)
    gan = ui_stack.submit("gan", {"steps": 60, "eval_every": 10})
    assert ui_stack.wait_for(digits["id"], timeout=180)["status"] == "succeeded"
    page.goto(f"{ui_stack.url}/#/jobs/{digits['id']}")
    page.wait_for_selector("#result-confusion-plot rect", state="attached")
    assert page.locator("#result-confusion-plot rect").count() == 100  # 10 × 10 classes
    assert page.locator("#result-confusion-table tr").count() == 11
    assert "on the diagonal" in page.inner_text("#job-result")
    assert page.evaluate(CLIPPED_LABELS) == []
    page.locator("#job-result-card").screenshot(path=str(shots / "result-confusion.png"))
    assert ui_stack.wait_for(gan["id"], timeout=180)["status"] == "succeeded"
    page.goto(f"{ui_stack.url}/#/jobs/{gan['id']}")
    page.wait_for_selector("#result-history table")
    assert page.locator("#result-history tr").count() == 7  # a header and one row per eval
    assert "generated_mean" in page.inner_text("#job-result")

    # Cancel asks first: "keep it" changes nothing; "yes" cancels.
    sleeper = ui_stack.submit("test-sleep", {"seconds": 120})
    ui_stack.wait_for(sleeper["id"], ("running",), timeout=60)
    page.goto(f"{ui_stack.url}/#/jobs/{sleeper['id']}")
    page.click("#cancel")
    page.wait_for_selector("#cancel-confirm")
    page.screenshot(path=str(shots / "cancel.png"))
    page.click("#cancel-keep")
    page.wait_for_selector("#cancel")
    assert ui_stack.api("GET", f"/jobs/{sleeper['id']}")["cancel_requested_at"] is None
    page.click("#cancel")
    page.click("#cancel-confirm")
    assert ui_stack.wait_for(sleeper["id"], timeout=60)["status"] == "cancelled"
    page.wait_for_selector("#job-head .badge.cancelled")

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

    # Usage: CPU-hours per member as bars; the queue over time as the peak and the mean of each step.
    page.goto(ui_stack.url + "/#/usage?since=24h")
    page.wait_for_selector("#usage-member svg rect")
    assert page.locator("#usage-member svg rect").count() == 2  # allocated and used for admin
    page.wait_for_selector("#usage-queue polyline", state="attached")
    assert min(polyline_points(page, "#usage-queue")) >= 50  # four lines, a point per step over 24 h
    page.wait_for_selector("#usage-rows td:has-text('admin')")
    assert "succeeded" in page.inner_text("#usage-rows")
    page.goto(ui_stack.url + "/#/usage?since=1h")
    page.wait_for_selector("#usage-queue h2:has-text('per 1 min step')")
    series = page.eval_on_selector_all("#usage-queue polyline", "els => els.map(e => e.dataset.series)")
    assert series == ["queued (max)", "queued (mean)", "running (max)", "running (mean)"]
    timeline = ui_stack.api("GET", "/usage/timeline?since=1h")
    assert max(p["running_max"] for p in timeline["points"]) >= 1  # each run shows in its minute
    assert page.evaluate(CLIPPED_LABELS) == []
    page.screenshot(path=str(shots / "usage.png"), full_page=True)

    # The API's own documentation renders from local files: Swagger UI with an Authorize button,
    # ReDoc, and the page a problem's type links to.
    page.goto(ui_stack.url + "/docs")
    page.wait_for_selector(".swagger-ui .btn.authorize")
    page.wait_for_selector(".swagger-ui .opblock-tag:has-text('jobs')")
    page.screenshot(path=str(shots / "docs.png"))
    page.goto(ui_stack.url + "/redoc")
    page.wait_for_selector("h1:has-text('gpulab')")
    page.wait_for_selector("h2:has-text('Submit a job')", state="attached")
    # ReDoc's bundle hard-codes its maker's logo from a CDN: the page's policy blocks it unasked.
    blocked = [r for r in failed_requests if r.startswith("https://cdn.redoc.ly/")]
    assert all("blocked" in r.lower() or "csp" in r.lower() for r in blocked), blocked
    failed_requests[:] = [r for r in failed_requests if r not in blocked]
    requests[:] = [u for u in requests if not u.startswith("https://cdn.redoc.ly/")]
    page.goto(ui_stack.url + "/problems/job_not_found")
    page.wait_for_selector("#what-to-do")
    page.screenshot(path=str(shots / "problem.png"))

    assert errors == [], errors
    assert failed_requests == [], failed_requests
    outside = [u for u in requests if not u.startswith((ui_stack.url, "blob:", "data:"))]
    assert outside == [], outside  # nothing from a CDN
    context.close()


def test_chart_axes_fit_single_points(browser, ui_stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """A lone value sits inside the frame with integer step ticks; dates mark a multi-day axis."""
    page = browser.new_page()
    page.goto(ui_stack.url + "/dashboard/index.html")
    result = page.evaluate("""async () => {
        const Charts = await import('/dashboard/charts.js');
        const one = Charts.line([{ name: 'acc', points: [[3, 0.93]] }], { integerX: true });
        document.body.append(one);
        const dot = one.querySelector('circle').getBBox();
        const frame = one.querySelectorAll('line.axis');
        const days = Charts.line([{ name: 'q', points: [[Date.parse('2026-06-01T00:00'), 1],
                                                        [Date.parse('2026-06-04T00:00'), 2]] }], { time: true });
        document.body.append(days);
        return { dot: [dot.x, dot.y], ticks: [...one.querySelectorAll('text.x-tick')].map(t => t.textContent),
                 yticks: [...one.querySelectorAll('text.y-tick')].map(t => t.textContent),
                 left: +frame[frame.length - 1].getAttribute('x1'),
                 bottom: +frame[frame.length - 2].getAttribute('y1'),
                 dayTicks: [...days.querySelectorAll('text.x-tick')].map(t => t.textContent) };
    }""")
    x, y = result["dot"]
    assert result["left"] + 20 < x < 620 and 15 < y < result["bottom"] - 20, result
    assert result["ticks"] == ["2", "3", "4"], result
    assert len(set(result["yticks"])) == len(result["yticks"]) >= 2, result
    assert all(any(m in t for m in ("Jun", "6月", "juin")) for t in result["dayTicks"]), result
    page.close()


def test_a_command_jobs_page_says_what_runs_in_what_and_as_whom(browser, ui_stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """The job page's rows for GET /jobs/{id}'s `command`: argv as a shell would read it, account, env, bundle."""
    page = browser.new_page()
    page.goto(ui_stack.url + "/dashboard/index.html")
    rows = page.evaluate("""async () => {
        const { commandRows } = await import('/dashboard/pages/job.js');
        const { h } = await import('/dashboard/dom.js');
        const dl = h('dl', {}, commandRows({ argv: ['python', 'train.py', '--note', "it's fine"],
            env: { LR: '0.1' }, python_env: 'torch-2.13', requeue: false, unix_user: 'alice',
            bundle: { sha256: 'ab'.repeat(32), size_bytes: 3 << 20, files: 7 } }));
        const none = h('dl', {}, commandRows(null));
        return { text: [...dl.querySelectorAll('dd')].map(d => d.textContent), empty: none.children.length };
    }""")
    assert rows["text"] == ["python train.py --note 'it'\\''s fine'", "alice", "torch-2.13 · LR=0.1",
                            "bundle abababababab · 3.0 MiB · 7 files"], rows
    assert rows["empty"] == 0
    page.close()


def test_another_members_job_page_shows_the_job_and_says_whose_contents_they_are(browser, ui_stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """Every job is listed for everyone, and its log, metrics and artifacts are its owner's and
    the admins': a member opening another's job sees its head and a line saying so, not an
    error in place of the page; its owner sees the whole page."""
    tag = ui_stack.port
    owner = ui_stack.api("POST", "/users", json={"name": f"owner{tag}"})["token"]
    other = ui_stack.api("POST", "/users", json={"name": f"other{tag}"})["token"]
    job_id = ui_stack.submit("tensor-anatomy", token=owner)["id"]
    assert ui_stack.wait_for(job_id, timeout=120)["status"] == "succeeded"

    def open_as(token: str):  # type: ignore[no-untyped-def]
        context, page, errors = signed_in(browser, token, f"{ui_stack.url}/#/jobs/{job_id}")
        page.wait_for_selector(f"#job-head:has-text('Job #{job_id}')")
        return context, page, errors

    context, page, errors = open_as(other)
    note = page.wait_for_selector("#job-not-mine")
    assert f"owner{tag}'s" in note.inner_text()
    assert "succeeded" in page.inner_text("#job-head")
    assert page.query_selector("p.error") is None and page.query_selector("#job-log") is None
    assert page.query_selector("#cancel") is None
    assert errors == [], errors
    context.close()

    context, page, errors = open_as(owner)
    page.wait_for_function("() => document.querySelector('#job-log').textContent.includes('succeeded')")
    assert page.query_selector("#job-not-mine") is None
    assert errors == [], errors
    context.close()


def test_a_clone_of_another_members_command_job_leaves_its_hidden_env_values_empty(browser, ui_stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """Another member sees a command job's --env values as the API's mask, `***`: a clone leaves
    them empty with a line asking for them, and the API refuses the mask sent back."""
    tag = ui_stack.port
    alice = ui_stack.api("POST", "/users", json={"name": f"envowner{tag}"})["token"]
    bob = ui_stack.api("POST", "/users", json={"name": f"envcloner{tag}"})["token"]
    env = {"WANDB_API_KEY": "s3cret-key", "WANDB_MODE": "offline"}
    job_id = ui_stack.submit("command", {"argv": ["true"], "env": env}, token=alice, device="cpu")["id"]

    def clone_as(token: str):  # type: ignore[no-untyped-def]
        context, page, errors = signed_in(browser, token, f"{ui_stack.url}/#/submit?from={job_id}")
        page.wait_for_selector(f"h1:has-text('Clone job #{job_id}')")
        return context, page, errors

    context, page, errors = clone_as(bob)
    assert page.input_value("#kind") == "command"
    assert json.loads(page.input_value("#param-env")) == {"WANDB_API_KEY": "", "WANDB_MODE": ""}
    note = page.inner_text("#clone-env-note")
    assert "WANDB_API_KEY, WANDB_MODE" in note and f"envowner{tag}'s" in note and "fill them in" in note, note
    # Sent back as it was shown, the mask is refused with the variable named.
    page.fill("#param-env", '{"WANDB_API_KEY": "***", "WANDB_MODE": "offline"}')
    page.click("#submit")
    page.wait_for_selector("#submit-error:has-text('params.env.WANDB_API_KEY')")
    page.fill("#param-env", '{"WANDB_API_KEY": "bobs-key", "WANDB_MODE": "offline"}')
    page.click("#submit")
    page.wait_for_function(f"() => /^#\\/jobs\\/\\d+$/.test(location.hash) && location.hash !== '#/jobs/{job_id}'")
    clone_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    assert ui_stack.job(clone_id)["params"]["env"] == {"WANDB_API_KEY": "bobs-key", "WANDB_MODE": "offline"}
    assert errors == [], errors
    context.close()

    context, page, errors = clone_as(alice)  # the owner's clone keeps the values
    assert json.loads(page.input_value("#param-env")) == env
    assert page.query_selector("#clone-env-note") is None
    assert errors == [], errors
    context.close()


def test_a_sweep_s_jobs_link_to_their_batch_and_the_jobs_page_filters_on_it(browser, ui_stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """A job submitted in a batch (`gpulab submit --sweep`) shows its batch on its page and in the
    jobs list, and the batch link lists that batch's jobs alone."""
    lone = ui_stack.submit("test-echo", {"lines": 0, "steps": 0})["id"]
    body = {"jobs": [{"kind": "test-echo", "params": {"lines": 0, "steps": steps}} for steps in (0, 1, 2)]}
    batch = [j["id"] for j in ui_stack.api("POST", "/jobs/batch", json=body, expect=201)["jobs"]]
    context, page, errors = signed_in(browser, ui_stack.token, f"{ui_stack.url}/#/jobs/{batch[1]}")
    page.wait_for_selector(f"#job-info a.batch-link[href='#/jobs?batch={batch[0]}']").click()
    page.wait_for_selector(f"#jobs-table tr[data-job='{batch[2]}']")
    listed = page.eval_on_selector_all("#jobs-table tr[data-job]", "rows => rows.map(r => +r.dataset.job)")
    assert sorted(listed) == sorted(batch) and lone not in listed, listed
    assert page.input_value("#job-filters input[name=batch]") == str(batch[0])
    assert errors == [], errors
    context.close()
