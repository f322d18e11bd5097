import { api } from "../api.js";
import * as Charts from "../charts.js";
import { badge, bar, every, fill, h, jobLink, mb, pct, render } from "../dom.js";

const chartId = (d) => "chart-" + d.id.replace(/[^a-z0-9]/gi, "-");

// One device's readings as label/value rows. A CPU device's utilisation is the whole host's
// (every process on the machine, not only gpulab's jobs), and says so.
function deviceRows(d) {
  const memTotal = d.memory_total_mb || 0;
  const memFrac = memTotal && d.memory_used_mb !== null ? d.memory_used_mb / memTotal : 0;
  const cuda = d.kind === "cuda";
  return [
    [cuda ? "GPU utilisation" : "host CPU utilisation", bar((d.utilization_pct || 0) / 100, pct(d.utilization_pct)),
     cuda ? "" : "all processes on this machine, not only gpulab's jobs"],
    [cuda ? "GPU memory" : "host memory", bar(memFrac, `${mb(d.memory_used_mb)} / ${mb(memTotal)}`, "mem")],
    ...(cuda ? [["temperature", d.temperature_c === null ? "–" : d.temperature_c + " °C"],
                ["power", d.power_w === null ? "–" : d.power_w.toFixed(0) + " W"],
                ["memory outside gpulab", mb(d.external_mb)]] : []),
    ["slots", String(d.slots)],
    ["software", softwareLine(d.runtime), "the versions this device's worker reported; each job records its own"],
    ["jobs", d.jobs.length ? d.jobs.map((j) => h("div", {}, jobLink(j.id), ` ${j.owner} · ${j.kind} `, badge(j.status)))
                           : h("span", { class: "muted" }, "idle")],
  ];
}

// torch, CUDA, cuDNN, driver...: what a result on this device depends on besides its code.
function softwareLine(rt) {
  if (!rt) return h("span", { class: "muted" }, "not reported");
  const parts = [["torch", rt.torch], ["CUDA", rt.cuda_runtime], ["cuDNN", rt.cudnn], ["NCCL", rt.nccl],
    ["driver", rt.driver], ["sm", rt.compute_capability], ["TF32", rt.tf32_matmul === undefined ? null : (rt.tf32_matmul ? "on" : "off")],
    ["Python", rt.python]];
  return h("span", { class: "muted" }, parts.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k} ${v}`).join(" · "));
}

export async function devicesPage() {
  render(h("h1", {}, "Devices"), h("div", { id: "devices", class: "grid" }));
  const charts = {};
  every(3000, async () => {
    const devices = await api("/devices");
    const cards = devices.map((d) => h("div", { class: "card device", "data-device": d.id },
      h("div", { class: "toolbar" }, h("b", {}, d.id), badge(d.state), h("span", { class: "muted" }, d.name)),
      h("dl", { class: "kv" }, deviceRows(d).map(([k, v, title]) => [h("dt", { title: title || null }, k), h("dd", {}, v)])),
      h("div", { id: chartId(d) }, charts[d.id] || "")));
    fill("devices", ...(cards.length ? cards : [h("p", { class: "muted" }, "No device has registered yet.")]));
    await Promise.all(devices.map(async (d) => {
      const pts = await api(`/devices/${d.id}/samples?since=15m`);
      const t = (p) => Date.parse(p.t);
      const total = d.memory_total_mb || 1;
      const who = d.kind === "cuda" ? "" : " (whole host)";
      charts[d.id] = Charts.line([
        { name: "utilisation %" + who, points: pts.map((p) => [t(p), p.utilization_pct]) },
        { name: "memory %" + who, points: pts.map((p) => [t(p), p.memory_used_mb === null ? null : (100 * p.memory_used_mb) / total]) },
      ], { time: true, xMin: Date.now() - 15 * 60000, xMax: Date.now(), yMin: 0, yMax: 100, height: 150, legend: true,
           empty: "no readings in the last 15 minutes" });
      fill(chartId(d), charts[d.id]);
    }));
  });
}
