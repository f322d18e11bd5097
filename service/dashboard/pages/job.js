// One job: status, result, efficiency, metric charts (with other jobs overlaid), log, artifacts.
// A finished job reads its log (from the end) and its metrics (downsampled) in two requests;
// only a job that still runs opens the live stream, from the last event already shown.
import { api, jobStream, signedInUser, unauthorized } from "../api.js";
import * as Charts from "../charts.js";
import { FINAL, badge, bar, batchLink, every, fill, h, mb, page, pct, query, render, secs } from "../dom.js";
import { resultView } from "../results.js";

const LOG_PAGE = 200;

// The params that differ between the compared jobs, as "lr=0.003 steps=60" for each job.
export function differingParams(jobs) {
  const keys = [...new Set(jobs.flatMap((j) => Object.keys(j.params || {})))];
  const differ = keys.filter((k) => new Set(jobs.map((j) => JSON.stringify((j.params || {})[k]))).size > 1);
  const out = {};
  for (const j of jobs) out[j.id] = differ.map((k) => `${k}=${JSON.stringify((j.params || {})[k] ?? null)}`).join(" ");
  return out;
}

// A running job has no run_seconds yet: show how long it has run so far.
function runSeconds(job) {
  if (job.run_seconds !== null && job.run_seconds !== undefined) return job.run_seconds;
  return job.started_at && !job.finished_at ? Math.max(0, (Date.now() - Date.parse(job.started_at)) / 1000) : null;
}

function efficiencyTiles(u) {
  const cuda = u.device_kind === "cuda";
  const unit = cuda ? "GPU" : "CPU";
  const tile = (value, label, title) => h("div", { title }, h("b", {}, value), label);
  let memory;
  if (u.peak_memory_mb !== null && u.peak_memory_mb !== undefined) {
    memory = tile(mb(u.peak_memory_mb), u.memory_total_mb ? `peak GPU memory of the job, on a ${mb(u.memory_total_mb)} card`
      : "peak GPU memory of the job", "the most memory the job's process held at once");
  } else {
    memory = tile("–", cuda ? "peak GPU memory: not recorded for this run" : "peak GPU memory: none (a CPU job)",
      "gpulab records the peak memory of jobs that ran on a GPU");
  }
  return [
    tile(secs(u.allocated_seconds), `${unit} time held: run time × its share of the device (${u.share.toFixed(2)})`,
      "what fair share and usage charge the member for"),
    tile(u.used_seconds === null ? "–" : secs(u.used_seconds),
      u.used_seconds === null ? `${unit} time used: no device readings while it ran` : `${unit} time used: time held × mean utilisation`),
    tile(pct(u.mean_utilization_pct), cuda ? "mean GPU utilisation while it ran (the whole card)"
      : "mean CPU utilisation of the whole host while it ran (all processes, not only this job)"),
    memory,
    tile(secs(u.wait_seconds), "waited in the queue before it started"),
    u.idle ? h("div", {}, badge("idle"), " holds a GPU near 0 % utilisation") : "",
  ];
}

// What a command job runs, in what, and as whom (GET /jobs/{id}'s `command`).
export function commandRows(cmd) {
  if (!cmd) return [];
  const quote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);
  const env = Object.entries(cmd.env || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  const b = cmd.bundle;
  const size = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
  return [
    h("dt", {}, "command"), h("dd", {}, h("code", { id: "job-command" }, cmd.argv.map(quote).join(" "))),
    h("dt", {}, "runs as"), h("dd", {}, cmd.unix_user + (cmd.requeue ? " · re-run after a lost worker" : "")),
    h("dt", {}, "environment"), h("dd", {}, cmd.python_env + (env ? ` · ${env}` : "")),
    h("dt", {}, "working dir"), h("dd", {}, !b ? "an empty folder"
      : `bundle ${b.sha256.slice(0, 12)}` + (b.size_bytes == null ? " (expired)" : ` · ${size(b.size_bytes)} · ${b.files} files`)),
  ];
}

export async function jobPage(id) {
  const compare = query().get("compare") || "";
  let job = await api(`/jobs/${id}`);
  let artifactsDrawn = false, confirming = false;
  const user = signedInUser();
  // Everyone sees a job and its place; its log, metrics and artifacts are its owner's and admins'.
  const mine = !user || user.is_admin || user.name === job.owner;
  if (!mine) {
    render(
      h("div", { id: "job-head" }),
      h("div", { class: "card" }, h("div", { id: "job-progress" }), h("div", { id: "job-info" })),
      h("p", { class: "muted", id: "job-not-mine" },
        `Job #${id} is ${job.owner}'s: its log, metrics and artifacts are theirs and the admins' to read.`));
    drawHead();
    return;
  }
  render(
    h("div", { id: "job-head" }),
    h("div", { class: "card" }, h("div", { id: "job-progress" }), h("div", { id: "job-info" })),
    h("div", { class: "card", id: "job-result-card", hidden: true }, h("h2", {}, "Result"), h("div", { id: "job-result" })),
    h("div", { class: "card" }, h("h2", {}, "Status"), h("div", { id: "job-timeline", class: "timeline" })),
    h("div", { class: "card", id: "job-efficiency-card" }, h("h2", {}, "Efficiency"), h("div", { id: "job-efficiency" })),
    h("div", { class: "card" }, h("h2", {}, "Metrics"),
      h("form", { class: "toolbar", id: "compare-form" }, h("label", { for: "compare" }, "overlay jobs "),
        h("input", { id: "compare", name: "compare", placeholder: "e.g. 12, 15", value: compare }),
        h("button", { type: "submit" }, "Compare")),
      h("div", { id: "job-metrics", class: "grid" })),
    h("div", { class: "card" }, h("div", { class: "toolbar" }, h("h2", {}, "Log"), h("span", { id: "log-more" })),
      h("div", { id: "job-log", class: "log" })),
    h("div", { class: "card" }, h("h2", {}, "Artifacts"), h("div", { id: "job-artifacts", class: "artifacts" })));
  document.getElementById("compare-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/jobs/${id}?compare=` + encodeURIComponent(new FormData(ev.target).get("compare"));
  });
  const others = compare.split(/[ ,#]+/).map(Number).filter((n) => n && n !== id);
  const full = new Set(); // metrics the member asked to see whole

  function drawHead() {
    const final = FINAL.includes(job.status);
    fill("job-head", h("div", { class: "toolbar" }, h("h1", {}, `Job #${job.id} · ${job.kind}`), badge(job.status),
      final || !mine ? "" : h("span", { id: "cancel-box" }, confirming ? cancelQuestion()
        : h("button", { class: "danger", id: "cancel", onclick: () => { confirming = true; drawHead(); } }, "Cancel")),
      h("a", { href: `#/submit?from=${job.id}` }, h("button", { class: "secondary", id: "clone" }, "Clone and resubmit"))));
    const prog = job.progress || (job.status === "succeeded" ? { step: 1, total: 1 } : null);
    fill("job-progress", prog ? bar(prog.step / prog.total, `${prog.step} / ${prog.total}`) : "");
    fill("job-info", h("dl", { class: "kv" },
      h("dt", {}, "owner"), h("dd", {}, job.owner),
      job.batch_id ? [h("dt", {}, "batch"), h("dd", {}, batchLink(job, "the sweep's jobs: batch " + job.batch_id))] : [],
      h("dt", {}, "device"), h("dd", {}, job.device_id || `(asked: ${job.device_request})`),
      h("dt", {}, "params"), h("dd", { class: "params-list" }, Object.entries(job.params || {}).map(([k, v]) =>
        h("span", {}, h("span", { class: "muted" }, k + " "), h("code", {}, JSON.stringify(v))))),
      commandRows(job.command),
      h("dt", {}, "seed · time limit · priority"), h("dd", {}, `${job.seed} · ${secs(job.timeout_s)} · ${job.priority}`),
      h("dt", {}, "wait"), h("dd", {}, secs(job.wait_seconds)),
      h("dt", {}, "run time"), h("dd", {}, secs(runSeconds(job)) + (job.status === "running" ? " so far" : "")),
      h("dt", {}, "attempt"), h("dd", {}, `${job.attempt} (runs ${job.runs} of ${job.max_attempts})`),
      job.error ? [h("dt", {}, "error"), h("dd", { class: "error" }, `${job.reason}: ${job.error}`)] : []));
    const card = document.getElementById("job-result-card");
    if (card && job.result) { card.hidden = false; fill("job-result", resultView(job.result)); }  // (gone once the page is left)
  }

  // Cancel asks first; the question survives the page's refreshes until it is answered.
  function cancelQuestion() {
    return h("span", { class: "confirm" }, `Cancel job #${id}? A running job stops at its next step. `,
      h("button", { class: "danger", id: "cancel-confirm", onclick: doCancel }, "Yes, cancel it"),
      h("button", { class: "secondary", id: "cancel-keep", onclick: () => { confirming = false; drawHead(); } }, "Keep it"));
  }

  async function doCancel() {
    confirming = false;
    await api(`/jobs/${id}/cancel`, { method: "POST" });
    await refresh();
  }

  async function refresh() {
    job = await api(`/jobs/${id}`);
    drawHead();
    const [statuses, u] = await Promise.all([api(`/jobs/${id}/events?type=status`), api(`/usage/jobs/${id}`)]);
    fill("job-timeline", statuses.items.map((e) => h("div", { class: "step" }, badge(e.data ? e.data.status : e.message),
      " ", h("span", { class: "muted" }, new Date(e.created_at).toLocaleTimeString()))));
    fill("job-efficiency", h("div", { class: "summary", id: "efficiency-summary" }, efficiencyTiles(u)));
    await drawMetrics();
    if (FINAL.includes(job.status) && !artifactsDrawn) { artifactsDrawn = true; await drawArtifacts(); }
  }

  async function drawMetrics() {
    const ids = [id, ...others];
    const [sets, jobs] = await Promise.all([
      Promise.all(ids.map((j) => api(`/jobs/${j}/metrics/series`).catch(() => []))),
      Promise.all(ids.map((j) => (j === id && job ? job : api(`/jobs/${j}`).catch(() => ({ id: j, params: {} }))))),
    ]);
    for (const name of full) {
      const whole = await api(`/jobs/${id}/metrics/series?full=true&name=${encodeURIComponent(name)}`);
      sets[0] = sets[0].filter((s) => s.name !== name).concat(whole);
    }
    const details = ids.length > 1 ? differingParams(jobs) : {};
    const names = [...new Set(sets.flat().map((m) => m.name))].sort();
    fill("job-metrics", ...(names.length ? names.map((name) => {
      const series = ids.map((j, i) => {
        const s = sets[i].find((m) => m.name === name);
        if (!s) return null;
        const x = (k) => (s.step[k] === null ? k : s.step[k]);
        return { name: `#${j}`, detail: details[j] || "", count: s.count, downsampled: s.downsampled,
                 points: s.value.map((v, k) => [x(k), v]),
                 band: s.downsampled ? s.value.map((_, k) => [x(k), s.min[k], s.max[k]]) : null };
      }).filter(Boolean);
      const positive = series.every((s) => s.points.every((p) => p[1] > 0));
      const chart = Charts.line(series, { title: name, logY: positive && /loss|mse|error/i.test(name),
                                          legend: ids.length > 1, integerX: true });
      chart.setAttribute("data-metric", name);
      const mine = series.find((s) => s.name === `#${id}`);
      if (mine && mine.downsampled) {
        chart.append(h("p", { class: "muted chart-note" },
          `${mine.points.length} buckets of ${mine.count.toLocaleString()} values: the mean of each, min–max shaded. `,
          h("button", { class: "secondary small", onclick: () => { full.add(name); drawMetrics(); } }, "show every value")));
      }
      return chart;
    }) : [h("p", { class: "muted" }, "No metrics yet.")]));
  }

  async function drawArtifacts() {
    const arts = await api(`/jobs/${id}/artifacts`);
    const items = await Promise.all(arts.map(async (a) => {
      const blob = await api(a.url, { blob: true });
      const url = URL.createObjectURL(blob);
      page.urls.push(url);
      const link = h("a", { href: url, download: a.name }, a.name);
      return h("figure", {}, a.content_type === "image/png" ? h("img", { src: url, alt: a.name }) : "",
        h("figcaption", {}, link, h("span", { class: "muted" }, ` ${(a.size_bytes / 1024).toFixed(1)} KiB`)));
    }));
    fill("job-artifacts", ...(items.length ? items : [h("p", { class: "muted" }, "No artifacts.")]));
  }

  // The log, newest page first; "earlier lines" reads the page before, on demand.
  const log = document.getElementById("job-log");
  const line = (e) => (e.type === "status" ? `● ${e.message}\n` : e.message + "\n");
  function moreButton(before) {
    fill("log-more", before ? h("button", { class: "secondary small", id: "log-earlier", onclick: () => earlier(before) },
      "show earlier lines") : "");
  }
  async function earlier(before) {
    const older = await api(`/jobs/${id}/log?limit=${LOG_PAGE}&before=${before}`);
    const height = log.scrollHeight;
    log.prepend(older.items.map(line).join(""));
    log.scrollTop += log.scrollHeight - height;
    moreButton(older.before);
  }
  const [first] = await Promise.all([api(`/jobs/${id}/log?limit=${LOG_PAGE}`), refresh()]);
  log.append(first.items.map(line).join(""));
  log.scrollTop = log.scrollHeight;
  moreButton(first.before);
  if (FINAL.includes(first.status)) return;

  // The live log, from the last event already shown; a ticket opens one stream, so a
  // reconnect buys a new one and resumes after the last event seen.
  let lastSeq = first.last_seq;
  let ended = false;
  let pending = false;
  const later = () => { if (!pending) { pending = true; setTimeout(() => { pending = false; refresh(); }, 700); } };
  const seen = (ev) => { lastSeq = Math.max(lastSeq, Number(ev.lastEventId) || 0); return JSON.parse(ev.data); };
  const attach = (source) => {
    source.addEventListener("log", (ev) => {
      log.append(line(seen(ev)));
      log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("progress", (ev) => {
      const e = seen(ev);
      if (e.data && e.data.total) fill("job-progress", bar(e.data.step / e.data.total, `${e.data.step} / ${e.data.total}`));
    });
    source.addEventListener("metric", (ev) => { seen(ev); later(); });
    source.addEventListener("status", (ev) => {
      const e = seen(ev);
      log.append(line(e));
      refresh();
      if (e.data && FINAL.includes(e.data.status)) { ended = true; source.close(); }
    });
    source.addEventListener("revoked", () => { ended = true; source.close(); unauthorized("Your token was revoked; sign in again."); });
    source.onerror = () => {
      if (job && FINAL.includes(job.status)) ended = true;
      // A ticket opens one stream: the browser's own reconnect is refused, so buy a new one.
      if (ended || source.readyState !== EventSource.CLOSED) { if (ended) source.close(); return; }
      setTimeout(() => { if (page.streams.includes(source)) openStream(); }, 2000);
    };
  };
  const openStream = async () => {
    const source = await jobStream(id, lastSeq);
    page.streams.push(source);
    attach(source);
  };
  await openStream();
  every(5000, async () => { if (job && !FINAL.includes(job.status)) await refresh(); });
}
