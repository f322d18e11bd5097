// The HTTP API, as the CLI calls it: a Bearer token from localStorage on every request.

export const TOKEN_KEY = "gpulab.token";
let onUnauthorized = () => {};

export function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers || {});
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body });
  if (r.status === 401) { onUnauthorized("Your token was refused; sign in again."); throw new Error("unauthorized"); }
  if (!r.ok) {
    let detail = r.statusText;
    try { const p = await r.json(); detail = `${p.code}: ${p.detail}`; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  if (opts.blob) return r.blob();
  return r.json();
}

// Who is signed in (GET /me): app.js keeps it, pages read it.
let signedIn = null;
export function setSignedIn(user) { signedIn = user; }
export function signedInUser() { return signedIn; }

// Sign out with a message (a refused or revoked token).
export function unauthorized(message) { onUnauthorized(message); }

// A job's live events after seq `after`. EventSource cannot set headers, and a token in a URL
// ends up in logs: the stream opens with a single-use ticket that the Bearer token buys.
export async function jobStream(jobId, after) {
  const t = await api(`/jobs/${jobId}/events/tickets`, { method: "POST" });
  return new EventSource(`${t.url}&after=${after || 0}`);
}
