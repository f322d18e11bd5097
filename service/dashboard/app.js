// The gpulab dashboard: plain JS modules over the same HTTP API as the CLI, no build step.
// This module signs in and routes; each page lives in pages/, the API client in api.js.
import { TOKEN_KEY, api, setSignedIn, token, whenUnauthorized } from "./api.js";
import { h, leavePage, render } from "./dom.js";
import { devicesPage } from "./pages/devices.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import { queuePage } from "./pages/queue.js";
import { submitPage } from "./pages/submit.js";
import { usagePage } from "./pages/usage.js";
import { workersPage } from "./pages/workers.js";

let me = null;

function showLogin(message) {
  leavePage();
  me = null;
  setSignedIn(null);
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
whenUnauthorized(showLogin);

async function whoAmI() {
  me = await api("/me");
  setSignedIn(me);
  document.getElementById("who").replaceChildren(
    h("span", {}, me.name + (me.is_admin ? " (admin)" : "")),
    h("button", { class: "secondary", onclick: () => { localStorage.removeItem(TOKEN_KEY); showLogin(); } }, "Sign out"));
}

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
