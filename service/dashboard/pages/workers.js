import { api } from "../api.js";
import { every, fill, h, jobLink, render, secs, table } from "../dom.js";

export async function workersPage() {
  render(h("h1", {}, "Workers"), h("div", { id: "workers" }));
  every(3000, async () => {
    const workers = await api("/workers");
    fill("workers", workers.length ? table(["worker", "device", "host", "pid", "slots", "heartbeat", "running"],
      workers.map((w) => h("tr", {}, h("td", {}, w.id), h("td", {}, w.device_id), h("td", {}, w.host),
        h("td", { class: "num" }, w.pid), h("td", { class: "num" }, w.slots),
        h("td", { class: w.heartbeat_age_s > 10 ? "error" : "" }, secs(w.heartbeat_age_s) + " ago"),
        h("td", {}, w.running_job_ids.length ? w.running_job_ids.map((j) => [jobLink(j), " "]) : h("span", { class: "muted" }, "idle")))))
      : h("p", { class: "muted" }, "No worker is running."));
  });
}
