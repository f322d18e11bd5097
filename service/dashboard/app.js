// The gpulab dashboard: plain JS over the same HTTP API as the CLI. The token lives in
// localStorage; every call sends it as a Bearer header. EventSource cannot set headers, and a
// token in a URL ends up in logs: the live log opens with a single-use stream ticket instead.
"use strict";

const TOKEN_KEY = "gpulab.token";
const FINAL = ["succeeded", "failed", "cancelled"];
const page = { timers: [], streams: [], urls: [] };
let me = null;

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "html") node.innerHTML = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers || {});
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body });
  if (r.status === 401) { showLogin("Your token was refused; sign in again."); throw new Error("unauthorized"); }
  if (!r.ok) {
    let detail = r.statusText;
    try { const p = await r.json(); detail = `${p.code}: ${p.detail}`; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  if (opts.blob) return r.blob();
  return r.json();
}

function every(ms, fn) {
  const run = () => fn().catch((e) => console.warn(e));
  run();
  page.timers.push(setInterval(run, ms));
}

function leavePage() {
  page.timers.forEach(clearInterval);
  page.streams.forEach((s) => s.close());
  page.urls.forEach(URL.revokeObjectURL);
  page.timers = []; page.streams = []; page.urls = [];
}

const main = () => document.getElementById("main");
function render(...nodes) { main().replaceChildren(...nodes); }
function fill(id, ...nodes) { const n = document.getElementById(id); if (n) n.replaceChildren(...nodes.flat(Infinity)); }

function secs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function mb(v) { return v === null || v === undefined ? "–" : v >= 1024 ? (v / 1024).toFixed(1) + " GiB" : v.toFixed(0) + " MiB"; }
function hours(v) { return v === null || v === undefined ? "–" : v >= 1 ? v.toFixed(1) + " h" : secs(v * 3600); }
function pct(v) { return v === null || v === undefined ? "–" : v.toFixed(0) + " %"; }
function badge(s) { return h("span", { class: "badge " + s }, s); }
function jobLink(id) { return h("a", { href: "#/jobs/" + id }, "#" + id); }
function bar(fraction, label, cls) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  return h("div", { class: "bar " + (cls || "") }, h("span", { style: `width:${(f * 100).toFixed(1)}%` }), h("em", {}, label));
}
function query() { return new URLSearchParams(location.hash.split("?")[1] || ""); }

// ---- login ---------------------------------------------------------------------------------

function showLogin(message) {
  leavePage();
  me = null;
  document.getElementById("who").replaceChildren();
  const tpl = document.getElementById("login-tpl").content.cloneNode(true);
  render(tpl);
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    localStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    try { await whoAmI(); route(); } catch (e) { /* showLogin already ran */ }
  });
}

async function whoAmI() {
  me = await api("/me");
  document.getElementById("who").replaceChildren(
    h("span", {}, me.name + (me.is_admin ? " (admin)" : "")),
    h("button", { class: "secondary", onclick: () => { localStorage.removeItem(TOKEN_KEY); showLogin(); } }, "Sign out"));
}

// ---- devices -------------------------------------------------------------------------------

async function devicesPage() {
  render(h("h1", {}, "Devices"), h("div", { id: "devices", class: "grid" }));
  const charts = {};
  every(3000, async () => {
    const devices = await api("/devices");
    const cards = devices.map((d) => {
      const memTotal = d.memory_total_mb || 0;
      const memFrac = memTotal && d.memory_used_mb !== null ? d.memory_used_mb / memTotal : 0;
      const id = "chart-" + d.id.replace(/[^a-z0-9]/gi, "-");
      return h("div", { class: "card device", "data-device": d.id },
        h("div", { class: "toolbar" }, h("b", {}, d.id), badge(d.state), h("span", { class: "muted" }, d.name)),
        h("dl", { class: "kv" },
          h("dt", {}, "utilisation"), h("dd", {}, bar((d.utilization_pct || 0) / 100, pct(d.utilization_pct))),
          h("dt", {}, "memory"), h("dd", {}, bar(memFrac, `${mb(d.memory_used_mb)} / ${mb(memTotal)}`, "mem")),
          d.kind === "cuda" ? [h("dt", {}, "temperature"), h("dd", {}, d.temperature_c === null ? "–" : d.temperature_c + " °C"),
                               h("dt", {}, "power"), h("dd", {}, d.power_w === null ? "–" : d.power_w.toFixed(0) + " W"),
                               h("dt", {}, "outside gpulab"), h("dd", {}, mb(d.external_mb))] : [],
          h("dt", {}, "slots"), h("dd", {}, String(d.slots)),
          h("dt", {}, "jobs"), h("dd", {}, d.jobs.length ? d.jobs.map((j) =>
            h("div", {}, jobLink(j.id), ` ${j.owner} · ${j.kind} `, badge(j.status))) : h("span", { class: "muted" }, "idle"))),
        h("div", { id }, charts[d.id] || ""));
    });
    fill("devices", ...(cards.length ? cards : [h("p", { class: "muted" }, "No device has registered yet.")]));
    await Promise.all(devices.map(async (d) => {
      const pts = await api(`/devices/${d.id}/samples?since=15m`);
      const t = (p) => Date.parse(p.t);
      const total = d.memory_total_mb || 1;
      charts[d.id] = Charts.line([
        { name: "utilisation %", points: pts.map((p) => [t(p), p.utilization_pct]) },
        { name: "memory %", points: pts.map((p) => [t(p), p.memory_used_mb === null ? null : (100 * p.memory_used_mb) / total]) },
      ], { time: true, yMin: 0, yMax: 100, height: 150, legend: true, empty: "no readings in the last 15 minutes" });
      fill("chart-" + d.id.replace(/[^a-z0-9]/gi, "-"), charts[d.id]);
    }));
  });
}

// ---- queue ---------------------------------------------------------------------------------

async function queuePage() {
  render(h("h1", {}, "Queue"), h("div", { id: "queue" }));
  every(3000, async () => {
    const q = await api("/queue");
    fill("queue",
      q.dispatcher_active ? "" : h("p", { class: "error" }, "No dispatcher is active: nothing will start."),
      q.items.length ? h("table", {},
        h("tr", {}, ["#", "job", "owner", "kind", "device", "priority", "waiting", "reason"].map((c) => h("th", {}, c))),
        q.items.map((e) => h("tr", {}, h("td", {}, e.position), h("td", {}, jobLink(e.job_id)), h("td", {}, e.owner),
          h("td", {}, e.kind), h("td", {}, e.device_request), h("td", { class: "num" }, e.priority),
          h("td", { class: "num" }, secs(e.waiting_s)),
          h("td", {}, e.reason ? badge(e.reason) : h("span", { class: "muted" }, "starts on " + e.next_device)))))
        : h("p", { class: "muted" }, "The queue is empty."));
  });
}

// ---- jobs ----------------------------------------------------------------------------------

async function jobsPage() {
  const q = query();
  const filters = h("form", { class: "toolbar", id: "job-filters" },
    h("select", { name: "status" }, ["", "pending", "dispatched", "running", "succeeded", "failed", "cancelled"]
      .map((s) => h("option", { value: s, selected: q.get("status") === s }, s || "any status"))),
    h("input", { name: "owner", placeholder: "owner", value: q.get("owner") || "" }),
    h("input", { name: "kind", placeholder: "kind", value: q.get("kind") || "" }),
    h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (v) p.set(k, v);
    location.hash = "#/jobs?" + p.toString();
  });
  render(h("h1", {}, "Jobs"), filters, h("div", { id: "jobs" }));
  every(3000, async () => {
    const p = new URLSearchParams({ limit: "100" });
    for (const k of ["status", "owner", "kind"]) if (q.get(k)) p.set(k, q.get(k));
    const page = await api("/jobs?" + p.toString());
    fill("jobs", h("table", { id: "jobs-table" },
      h("tr", {}, ["job", "owner", "kind", "status", "device", "wait", "run", "created"].map((c) => h("th", {}, c))),
      page.items.map((j) => h("tr", { "data-job": j.id }, h("td", {}, jobLink(j.id)), h("td", {}, j.owner), h("td", {}, j.kind),
        h("td", {}, badge(j.status), j.reason ? h("span", { class: "muted" }, " " + j.reason) : ""),
        h("td", {}, j.device_id || j.device_request),
        h("td", { class: "num" }, secs(j.wait_seconds)), h("td", { class: "num" }, secs(j.run_seconds)),
        h("td", { class: "muted" }, new Date(j.created_at).toLocaleString())))));
  });
}

async function jobPage(id) {
  const compare = query().get("compare") || "";
  render(
    h("div", { id: "job-head" }),
    h("div", { class: "card" }, h("div", { id: "job-progress" }), h("div", { id: "job-info" })),
    h("div", { class: "card" }, h("h2", {}, "Status"), h("div", { id: "job-timeline", class: "timeline" })),
    h("div", { class: "card", id: "job-efficiency-card" }, h("h2", {}, "Efficiency"), h("div", { id: "job-efficiency" })),
    h("div", { class: "card" }, h("h2", {}, "Metrics"),
      h("form", { class: "toolbar", id: "compare-form" }, h("label", {}, "overlay jobs "),
        h("input", { name: "compare", placeholder: "e.g. 12, 15", value: compare }), h("button", { type: "submit" }, "Compare")),
      h("div", { id: "job-metrics", class: "grid" })),
    h("div", { class: "card" }, h("h2", {}, "Log"), h("div", { id: "job-log", class: "log" })),
    h("div", { class: "card" }, h("h2", {}, "Artifacts"), h("div", { id: "job-artifacts", class: "artifacts" })));
  document.getElementById("compare-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/jobs/${id}?compare=` + encodeURIComponent(new FormData(ev.target).get("compare"));
  });
  const others = compare.split(/[ ,]+/).map(Number).filter((n) => n && n !== id);
  let job = null, ended = false;

  async function refresh() {
    job = await api(`/jobs/${id}`);
    const final = FINAL.includes(job.status);
    fill("job-head", h("div", { class: "toolbar" }, h("h1", {}, `Job #${job.id} · ${job.kind}`), badge(job.status),
      final ? "" : h("button", { class: "danger", id: "cancel", onclick: cancel }, "Cancel"),
      h("a", { href: `#/submit?from=${job.id}` }, h("button", { class: "secondary", id: "clone" }, "Clone and resubmit"))));
    const prog = job.progress || (job.status === "succeeded" ? { step: 1, total: 1 } : null);
    fill("job-progress", prog ? bar(prog.step / prog.total, `${prog.step} / ${prog.total}`) : "");
    fill("job-info", h("dl", { class: "kv" },
      h("dt", {}, "owner"), h("dd", {}, job.owner),
      h("dt", {}, "device"), h("dd", {}, job.device_id || `(asked: ${job.device_request})`),
      h("dt", {}, "params"), h("dd", {}, h("code", {}, JSON.stringify(job.params))),
      h("dt", {}, "wait"), h("dd", {}, secs(job.wait_seconds)),
      h("dt", {}, "run time"), h("dd", {}, secs(job.run_seconds)),
      h("dt", {}, "peak memory"), h("dd", {}, mb(job.peak_memory_mb)),
      h("dt", {}, "attempt"), h("dd", {}, `${job.attempt} (runs ${job.runs} of ${job.max_attempts})`),
      job.error ? [h("dt", {}, "error"), h("dd", { class: "error" }, `${job.reason}: ${job.error}`)] : [],
      job.result ? [h("dt", {}, "result"), h("dd", {}, h("code", {}, JSON.stringify(job.result)))] : []));
    const statuses = await api(`/jobs/${id}/events?type=status`);
    fill("job-timeline", statuses.items.map((e) => h("div", { class: "step" }, badge(e.data ? e.data.status : e.message),
      " ", h("span", { class: "muted" }, new Date(e.created_at).toLocaleTimeString()))));
    const u = await api(`/usage/jobs/${id}`);
    const unit = u.device_kind === "cuda" ? "GPU" : "device";
    fill("job-efficiency", h("div", { class: "summary", id: "efficiency-summary" },
      h("div", {}, h("b", {}, secs(u.allocated_seconds)), `${unit} time allocated (share ${u.share.toFixed(2)})`),
      h("div", {}, h("b", {}, u.used_seconds === null ? "–" : secs(u.used_seconds)), `${unit} time used`),
      h("div", {}, h("b", {}, pct(u.mean_utilization_pct)), "mean utilisation while it ran"),
      h("div", {}, h("b", {}, mb(u.peak_memory_mb)), u.memory_total_mb ? `peak of ${mb(u.memory_total_mb)}` : "peak memory"),
      h("div", {}, h("b", {}, secs(u.wait_seconds)), "waited in the queue"),
      u.idle ? h("div", {}, badge("idle"), " holds a GPU near 0 % utilisation") : ""));
    await drawMetrics();
    if (final && !ended) { ended = true; await drawArtifacts(); }
  }

  async function drawMetrics() {
    const ids = [id, ...others];
    const sets = await Promise.all(ids.map((j) => api(`/jobs/${j}/metrics`).catch(() => [])));
    const names = [...new Set(sets.flat().map((m) => m.name))];
    fill("job-metrics", ...(names.length ? names.map((name) => {
      const series = ids.map((j, i) => ({
        name: `#${j}`,
        points: sets[i].filter((m) => m.name === name).map((m, k) => [m.step === null ? k : m.step, m.value]),
      })).filter((s) => s.points.length);
      const positive = series.every((s) => s.points.every((p) => p[1] > 0));
      const chart = Charts.line(series, { title: name, logY: positive && /loss|mse|error/i.test(name), legend: ids.length > 1 });
      chart.setAttribute("data-metric", name);
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

  async function cancel() {
    await api(`/jobs/${id}/cancel`, { method: "POST" });
    await refresh();
  }

  await refresh();
  // The live log: EventSource cannot send headers, so it opens with a single-use ticket that
  // the Bearer token buys (POST .../events/tickets); a reconnect buys a new one and resumes
  // after the last event seen.
  const log = document.getElementById("job-log");
  let lastSeq = 0;
  let ended = false;
  let pending = false;
  const later = () => { if (!pending) { pending = true; setTimeout(() => { pending = false; refresh(); }, 700); } };
  const seen = (ev) => { lastSeq = Math.max(lastSeq, Number(ev.lastEventId) || 0); return JSON.parse(ev.data); };
  const attach = (source) => {
    source.addEventListener("log", (ev) => {
      const e = seen(ev);
      log.append(e.message + "\n");
      log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("progress", (ev) => {
      const e = seen(ev);
      if (e.data && e.data.total) fill("job-progress", bar(e.data.step / e.data.total, `${e.data.step} / ${e.data.total}`));
    });
    source.addEventListener("metric", (ev) => { seen(ev); later(); });
    source.addEventListener("status", (ev) => {
      const e = seen(ev);
      log.append(`● ${e.message}\n`);
      refresh();
      if (e.data && FINAL.includes(e.data.status)) { ended = true; source.close(); }
    });
    source.addEventListener("revoked", () => { ended = true; source.close(); showLogin("Your token was revoked; sign in again."); });
    source.onerror = () => {
      if (job && FINAL.includes(job.status)) ended = true;
      // A ticket opens one stream: the browser's own reconnect is refused, so buy a new one.
      if (ended || source.readyState !== EventSource.CLOSED) { if (ended) source.close(); return; }
      setTimeout(() => { if (page.streams.includes(source)) openStream(); }, 2000);
    };
  };
  const openStream = async () => {
    const t = await api(`/jobs/${id}/events/tickets`, { method: "POST" });
    const source = new EventSource(`${t.url}&after=${lastSeq}`);
    page.streams.push(source);
    attach(source);
  };
  await openStream();
  every(5000, async () => { if (job && !FINAL.includes(job.status)) await refresh(); });
}

// ---- workers -------------------------------------------------------------------------------

async function workersPage() {
  render(h("h1", {}, "Workers"), h("div", { id: "workers" }));
  every(3000, async () => {
    const workers = await api("/workers");
    fill("workers", workers.length ? h("table", {},
      h("tr", {}, ["worker", "device", "host", "pid", "slots", "heartbeat", "running"].map((c) => h("th", {}, c))),
      workers.map((w) => h("tr", {}, h("td", {}, w.id), h("td", {}, w.device_id), h("td", {}, w.host),
        h("td", { class: "num" }, w.pid), h("td", { class: "num" }, w.slots),
        h("td", { class: w.heartbeat_age_s > 10 ? "error" : "" }, secs(w.heartbeat_age_s) + " ago"),
        h("td", {}, w.running_job_ids.length ? w.running_job_ids.map((j) => [jobLink(j), " "]) : h("span", { class: "muted" }, "idle")))))
      : h("p", { class: "muted" }, "No worker is running."));
  });
}

// ---- usage ---------------------------------------------------------------------------------

async function usagePage() {
  const since = query().get("since") || "7d";
  render(h("div", { class: "toolbar" }, h("h1", {}, "Usage"),
    ...["24h", "7d", "30d"].map((s) => h("a", { href: "#/usage?since=" + s }, h("button", { class: s === since ? "" : "secondary" }, s)))),
    h("div", { class: "grid" }, h("div", { class: "card", id: "usage-member" }), h("div", { class: "card", id: "usage-device" })),
    h("div", { class: "grid" }, h("div", { class: "card", id: "usage-queue" }), h("div", { class: "card", id: "usage-wait" })),
    h("div", { class: "card" }, h("h2", {}, "Per member"), h("div", { id: "usage-table" })),
    h("div", { class: "card" }, h("h2", {}, "Idle GPU jobs"), h("div", { id: "usage-idle" })));
  const hoursChart = (rows, title) => {
    const gpu = rows.some((r) => r.gpu_hours > 0);
    const [a, u] = gpu ? ["gpu_hours", "gpu_used_hours"] : ["cpu_hours", "cpu_used_hours"];
    const unit = gpu ? "GPU-hours" : "CPU-hours";
    return Charts.bars(rows.map((r) => ({ label: r.key, values: [r[a], r[u]] })),
      [{ name: unit + " allocated" }, { name: unit + " used" }], { title: `${title} (${unit})`, legend: true });
  };
  every(10000, async () => {
    const [members, devices, timeline] = await Promise.all([
      api(`/usage?since=${since}&group_by=member`), api(`/usage?since=${since}&group_by=device`),
      api(`/usage/timeline?since=${since === "7d" || since === "30d" ? since : "24h"}`)]);
    fill("usage-member", hoursChart(members.rows, "Per member"));
    fill("usage-device", hoursChart(devices.rows.filter((r) => r.key !== "(not placed)"), "Per device"));
    const t = (p) => Date.parse(p.t);
    fill("usage-queue", Charts.line([
      { name: "queue depth", points: timeline.points.map((p) => [t(p), p.queue_depth]) },
      { name: "running", points: timeline.points.map((p) => [t(p), p.running]) }],
      { time: true, yMin: 0, title: "Queue depth and running jobs", legend: true }));
    fill("usage-wait", Charts.line([{ name: "mean wait (s)", points: timeline.points.filter((p) => p.mean_wait_s !== null)
      .map((p) => [t(p), p.mean_wait_s]) }], { time: true, yMin: 0, title: "Mean wait of jobs started", legend: true }));
    fill("usage-table", h("table", { id: "usage-rows" },
      h("tr", {}, ["member", "jobs", "outcomes", "GPU time", "GPU used", "CPU time", "CPU used", "mean wait"].map((c) => h("th", {}, c))),
      members.rows.map((r) => h("tr", {}, h("td", {}, r.key), h("td", { class: "num" }, r.jobs),
        h("td", {}, Object.entries(r.outcomes).map(([k, v]) => [badge(k), ` ${v} `])),
        h("td", { class: "num" }, hours(r.gpu_hours)), h("td", { class: "num" }, hours(r.gpu_used_hours)),
        h("td", { class: "num" }, hours(r.cpu_hours)), h("td", { class: "num" }, hours(r.cpu_used_hours)),
        h("td", { class: "num" }, secs(r.mean_wait_s))))));
    fill("usage-idle", members.idle_jobs.length ? h("table", {},
      h("tr", {}, ["job", "owner", "device", "running for", "utilisation"].map((c) => h("th", {}, c))),
      members.idle_jobs.map((u) => h("tr", {}, h("td", {}, jobLink(u.job_id)), h("td", {}, u.owner), h("td", {}, u.device_id),
        h("td", {}, secs(u.run_seconds)), h("td", {}, pct(u.mean_utilization_pct)))))
      : h("p", { class: "muted" }, `No GPU job has sat near 0 % for ${members.idle_minutes} minutes.`));
  });
}

// ---- submit --------------------------------------------------------------------------------

function paramInput(name, schema, value) {
  const options = schema.anyOf ? schema.anyOf.filter((s) => s.type !== "null") : [schema];
  const s = Object.assign({}, schema, options[0] || {});
  const attrs = { id: "param-" + name, name, "data-type": s.type || "string", "data-nullable": !!schema.anyOf };
  if (s.enum) return h("select", attrs, s.enum.map((v) => h("option", { value: v, selected: v === value }, v)));
  if (s.type === "boolean") return h("input", Object.assign(attrs, { type: "checkbox", checked: !!value }));
  if (s.type === "integer" || s.type === "number") {
    return h("input", Object.assign(attrs, { type: "number", step: s.type === "integer" ? "1" : "any",
      min: s.minimum, max: s.maximum, value: value === null || value === undefined ? "" : value }));
  }
  if (s.type === "array" || s.type === "object") {
    return h("input", Object.assign(attrs, { "data-type": "json", value: value === undefined || value === null ? "" : JSON.stringify(value) }));
  }
  return h("input", Object.assign(attrs, { value: value === null || value === undefined ? "" : value }));
}

function readParam(input, schema) {
  const t = input.dataset.type;
  if (t === "boolean") return input.checked;
  if (input.value === "") return input.dataset.nullable === "true" ? null : undefined;
  if (t === "integer") return parseInt(input.value, 10);
  if (t === "number") return parseFloat(input.value);
  if (t === "json") return JSON.parse(input.value);
  return input.value;
}

async function submitPage() {
  const from = query().get("from");
  const [kinds, source] = await Promise.all([api("/job-kinds"), from ? api(`/jobs/${from}`) : null]);
  const enabled = kinds.filter((k) => k.enabled);
  const kindSelect = h("select", { id: "kind", name: "kind" },
    enabled.map((k) => h("option", { value: k.name, selected: source && source.kind === k.name }, k.name)));
  render(h("h1", {}, source ? `Clone job #${source.id}` : "Submit a job"),
    h("div", { class: "card" }, h("form", { class: "params", id: "submit-form" },
      h("label", { for: "kind" }, "kind"), kindSelect, h("small", { id: "kind-summary" }),
      h("div", { id: "param-fields", style: "display:contents" }),
      h("label", { for: "device" }, "device"),
      h("input", { id: "device", value: source ? source.device_request : "cpu", placeholder: "cpu, gpu, cuda:0, model=H100" }),
      h("label", { for: "priority" }, "priority"), h("input", { id: "priority", type: "number", value: source ? source.priority : 0 }),
      h("label", { for: "gpu_memory_gb" }, "GPU memory (GB)"),
      h("input", { id: "gpu_memory_gb", type: "number", step: "any", value: source && source.gpu_memory_gb ? source.gpu_memory_gb : "",
                   placeholder: "declare to share a GPU" }),
      h("span", {}), h("button", { type: "submit", id: "submit" }, "Submit"))),
    h("p", { id: "submit-error", class: "error" }));
  let schema = null;
  const drawFields = () => {
    const kind = enabled.find((k) => k.name === kindSelect.value);
    schema = kind.params_schema;
    fill("kind-summary", kind.summary);
    const values = source && source.kind === kind.name ? source.params : {};
    fill("param-fields", ...Object.entries(schema.properties || {}).flatMap(([name, p]) => [
      h("label", { for: "param-" + name, title: p.description || "" }, name),
      paramInput(name, p, name in values ? values[name] : p.default),
      p.description ? h("small", {}, p.description) : ""]));
  };
  kindSelect.addEventListener("change", drawFields);
  drawFields();
  document.getElementById("submit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = {};
    try {
      for (const [name, p] of Object.entries(schema.properties || {})) {
        const v = readParam(document.getElementById("param-" + name), p);
        // Send what differs from the default: the job keeps the kind's defaults for the rest.
        if (v !== undefined && JSON.stringify(v) !== JSON.stringify(p.default)) params[name] = v;
      }
    } catch (e) { fill("submit-error", "A parameter is not valid JSON: " + e.message); return; }
    const body = { kind: kindSelect.value, params, device: document.getElementById("device").value || "cpu",
                   priority: parseInt(document.getElementById("priority").value || "0", 10) };
    const mem = document.getElementById("gpu_memory_gb").value;
    if (mem) body.gpu_memory_gb = parseFloat(mem);
    try {
      const job = await api("/jobs", { method: "POST", json: body });
      location.hash = "#/jobs/" + job.id;
    } catch (e) { fill("submit-error", e.message); }
  });
}

// ---- routing -------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/devices$/, devicesPage], [/^#\/queue$/, queuePage], [/^#\/jobs$/, jobsPage],
  [/^#\/jobs\/(\d+)$/, (m) => jobPage(parseInt(m[1], 10))], [/^#\/workers$/, workersPage],
  [/^#\/usage$/, usagePage], [/^#\/submit$/, submitPage],
];

async function route() {
  leavePage();
  if (!token()) { showLogin(); return; }
  if (!me) { try { await whoAmI(); } catch (e) { return; } }
  const path = (location.hash || "#/devices").split("?")[0];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", path.startsWith(a.getAttribute("href")));
  for (const [re, fn] of ROUTES) {
    const m = path.match(re);
    if (m) {
      try { await fn(m); } catch (e) { if (e.message !== "unauthorized") render(h("p", { class: "error" }, e.message)); }
      return;
    }
  }
  location.hash = "#/devices";
}

window.addEventListener("hashchange", route);
route();
