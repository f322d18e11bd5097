import { api } from "../api.js";
import { badge, batchLink, every, fill, h, jobLink, query, render, secs, table } from "../dom.js";

export async function jobsPage() {
  const q = query();
  const filters = h("form", { class: "toolbar", id: "job-filters" },
    h("select", { name: "status" }, ["", "pending", "dispatched", "running", "succeeded", "failed", "cancelled"]
      .map((s) => h("option", { value: s, selected: q.get("status") === s }, s || "any status"))),
    h("input", { name: "owner", placeholder: "owner", value: q.get("owner") || "" }),
    h("input", { name: "kind", placeholder: "kind", value: q.get("kind") || "" }),
    h("input", { name: "batch", placeholder: "batch", inputmode: "numeric", size: 6, value: q.get("batch") || "" }),
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
    for (const k of ["status", "owner", "kind", "batch"]) if (q.get(k)) p.set(k, q.get(k));
    const list = await api("/jobs?" + p.toString());
    fill("jobs", table(["job", "owner", "kind", "status", "device", "wait", "run", "created"],
      list.items.map((j) => h("tr", { "data-job": j.id }, h("td", {}, jobLink(j.id), batchLink(j)), h("td", {}, j.owner), h("td", {}, j.kind),
        h("td", {}, badge(j.status), j.reason ? h("span", { class: "muted" }, " " + j.reason) : ""),
        h("td", {}, j.device_id || j.device_request),
        h("td", { class: "num" }, secs(j.wait_seconds)), h("td", { class: "num" }, secs(j.run_seconds)),
        h("td", { class: "muted" }, new Date(j.created_at).toLocaleString()))), { id: "jobs-table" }));
  });
}
