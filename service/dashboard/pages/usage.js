import { api } from "../api.js";
import * as Charts from "../charts.js";
import { COLORS } from "../charts.js";
import { badge, every, fill, h, hours, jobLink, pct, query, render, secs, table } from "../dom.js";

const SPANS = ["1h", "24h", "7d", "30d"];
const stepLabel = (s) => (s >= 3600 ? `${+(s / 3600).toFixed(1)} h` : s >= 60 ? `${+(s / 60).toFixed(1)} min` : `${Math.round(s)} s`);

function hoursChart(rows, title) {
  const gpu = rows.some((r) => r.gpu_hours > 0);
  const [a, u] = gpu ? ["gpu_hours", "gpu_used_hours"] : ["cpu_hours", "cpu_used_hours"];
  const unit = gpu ? "GPU-hours" : "CPU-hours";
  return Charts.bars(rows.map((r) => ({ label: r.key, values: [r[a], r[u]] })),
    [{ name: unit + " allocated" }, { name: unit + " used" }], { title: `${title} (${unit})`, legend: true });
}

export async function usagePage() {
  const since = SPANS.includes(query().get("since")) ? query().get("since") : "7d";
  render(h("div", { class: "toolbar" }, h("h1", {}, "Usage"),
    ...SPANS.map((s) => h("a", { href: "#/usage?since=" + s }, h("button", { class: s === since ? "" : "secondary" }, s)))),
    h("div", { class: "grid" }, h("div", { class: "card", id: "usage-member" }), h("div", { class: "card", id: "usage-device" })),
    h("div", { class: "grid" }, h("div", { class: "card", id: "usage-queue" }), h("div", { class: "card", id: "usage-wait" })),
    h("div", { class: "card" }, h("h2", {}, "Per member"), h("div", { id: "usage-table" })),
    h("div", { class: "card" }, h("h2", {}, "Idle GPU jobs"), h("div", { id: "usage-idle" })));
  every(10000, async () => {
    const [members, devices, timeline] = await Promise.all([
      api(`/usage?since=${since}&group_by=member`), api(`/usage?since=${since}&group_by=device`),
      api(`/usage/timeline?since=${since}`)]);
    fill("usage-member", hoursChart(members.rows, "Per member"));
    fill("usage-device", hoursChart(devices.rows.filter((r) => r.key !== "(not placed)"), "Per device"));
    const t = (p) => Date.parse(p.t);
    const pts = timeline.points;
    const frame = { xMin: Date.parse(timeline.since), xMax: Date.parse(timeline.until) };
    // Each step shows the most jobs at any instant in it (solid) and the mean over it (dashed):
    // a queue that lasted 85 s still shows in a 24-minute step.
    fill("usage-queue", Charts.line([
      { name: "queued (max)", color: COLORS[0], points: pts.map((p) => [t(p), p.queue_depth_max]) },
      { name: "queued (mean)", color: COLORS[0], dash: true, points: pts.map((p) => [t(p), p.queue_depth_mean]) },
      { name: "running (max)", color: COLORS[2], points: pts.map((p) => [t(p), p.running_max]) },
      { name: "running (mean)", color: COLORS[2], dash: true, points: pts.map((p) => [t(p), p.running_mean]) }],
      { ...frame, time: true, yMin: 0, title: `Queue depth and running jobs (per ${stepLabel(timeline.step_s)} step)`, legend: true }));
    fill("usage-wait", Charts.line([{ name: "mean wait (s)", points: pts.filter((p) => p.mean_wait_s !== null)
      .map((p) => [t(p), p.mean_wait_s]) }], { ...frame, time: true, yMin: 0, title: "Mean wait of jobs started", legend: true,
      empty: "no job started in this window" }));
    fill("usage-table", table(["member", "jobs", "outcomes", "GPU time", "GPU used", "CPU time", "CPU used", "mean wait"],
      members.rows.map((r) => h("tr", {}, h("td", {}, r.key), h("td", { class: "num" }, r.jobs),
        h("td", {}, Object.entries(r.outcomes).map(([k, v]) => [badge(k), ` ${v} `])),
        h("td", { class: "num" }, hours(r.gpu_hours)), h("td", { class: "num" }, hours(r.gpu_used_hours)),
        h("td", { class: "num" }, hours(r.cpu_hours)), h("td", { class: "num" }, hours(r.cpu_used_hours)),
        h("td", { class: "num" }, secs(r.mean_wait_s)))), { id: "usage-rows" }));
    fill("usage-idle", members.idle_jobs.length ? table(["job", "owner", "device", "running for", "utilisation"],
      members.idle_jobs.map((u) => h("tr", {}, h("td", {}, jobLink(u.job_id)), h("td", {}, u.owner), h("td", {}, u.device_id),
        h("td", {}, secs(u.run_seconds)), h("td", {}, pct(u.mean_utilization_pct)))))
      : h("p", { class: "muted" }, `No GPU job has sat near 0 % for ${members.idle_minutes} minutes.`));
  });
}
