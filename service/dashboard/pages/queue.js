import { api } from "../api.js";
import { badge, every, fill, h, jobLink, render, secs, table } from "../dom.js";

export async function queuePage() {
  render(h("h1", {}, "Queue"), h("div", { id: "queue" }));
  every(3000, async () => {
    const q = await api("/queue");
    fill("queue",
      q.dispatcher_active ? "" : h("p", { class: "error" }, "No dispatcher is active: nothing will start."),
      q.matching > q.items.length ? h("p", { class: "muted" }, `The first ${q.items.length} of ${q.total} pending jobs.`) : "",
      q.items.length ? table(["#", "job", "owner", "kind", "device", "priority", "waiting", "reason"],
        q.items.map((e) => h("tr", {}, h("td", {}, e.position), h("td", {}, jobLink(e.job_id)), h("td", {}, e.owner),
          h("td", {}, e.kind), h("td", {}, e.device_request), h("td", { class: "num" }, e.priority),
          h("td", { class: "num" }, secs(e.waiting_s)),
          h("td", {}, e.reason ? badge(e.reason) : h("span", { class: "muted" }, "starts on " + e.next_device)))))
        : h("p", { class: "muted" }, "The queue is empty."));
  });
}
