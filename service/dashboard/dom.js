// DOM building and formatting helpers shared by every page, and the page's lifetime
// (timers, streams and object URLs that a page leaves behind when the route changes).

export const FINAL = ["succeeded", "failed", "cancelled"];
export const page = { timers: [], streams: [], urls: [] };

export function h(tag, attrs, ...children) {
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

export function every(ms, fn) {
  const run = () => fn().catch((e) => console.warn(e));
  run();
  page.timers.push(setInterval(run, ms));
}

export function leavePage() {
  page.timers.forEach(clearInterval);
  page.streams.forEach((s) => s.close());
  page.urls.forEach(URL.revokeObjectURL);
  page.timers = []; page.streams = []; page.urls = [];
}

const main = () => document.getElementById("main");
export function render(...nodes) { main().replaceChildren(...nodes); }
export function fill(id, ...nodes) { const n = document.getElementById(id); if (n) n.replaceChildren(...nodes.flat(Infinity)); }

export function secs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
export function mb(v) { return v === null || v === undefined ? "–" : v >= 1024 ? (v / 1024).toFixed(1) + " GiB" : v.toFixed(0) + " MiB"; }
export function hours(v) { return v === null || v === undefined ? "–" : v >= 1 ? v.toFixed(1) + " h" : secs(v * 3600); }
export function pct(v) { return v === null || v === undefined ? "–" : v.toFixed(0) + " %"; }
export function badge(s) { return h("span", { class: "badge " + s }, s); }
export function jobLink(id) { return h("a", { href: "#/jobs/" + id }, "#" + id); }
// A job of a sweep (POST /jobs/batch) links to the list of its batch's jobs.
export function batchLink(job, label) {
  return job.batch_id ? h("a", { class: "batch-link muted", href: "#/jobs?batch=" + job.batch_id }, label || ` batch ${job.batch_id}`) : "";
}
export function bar(fraction, label, cls) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  return h("div", { class: "bar " + (cls || "") }, h("span", { style: `width:${(f * 100).toFixed(1)}%` }), h("em", {}, label));
}
export function query() { return new URLSearchParams(location.hash.split("?")[1] || ""); }
export function table(columns, rows, attrs) {
  return h("table", attrs || {}, h("tr", {}, columns.map((c) => h("th", {}, c))), rows);
}
