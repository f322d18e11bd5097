// Submit a job from a form built from its kind's JSON Schema; "clone" fills it from an earlier
// job, seed and limits included, so a resubmitted run repeats the first one.
import { api } from "../api.js";
import { fill, h, query, render } from "../dom.js";

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

function readParam(input) {
  const t = input.dataset.type;
  if (t === "boolean") return input.checked;
  if (input.value === "") return input.dataset.nullable === "true" ? null : undefined;
  if (t === "integer") return parseInt(input.value, 10);
  if (t === "number") return parseFloat(input.value);
  if (t === "json") return JSON.parse(input.value);
  return input.value;
}

// The API shows this in place of each of another member's --env values (jobs/command.py,
// ENV_VALUE_MASK); it refuses it back, since submitting it is never what anyone meant.
const ENV_VALUE_MASK = "***";

// A clone of another member's command job: its hidden --env values become empty, to be filled in.
function unmasked(params) {
  const env = (params && params.env) || {};
  const hidden = Object.keys(env).filter((k) => env[k] === ENV_VALUE_MASK);
  if (!hidden.length) return { params, hidden };
  const cleared = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === ENV_VALUE_MASK ? "" : v]));
  return { params: Object.assign({}, params, { env: cleared }), hidden };
}

// The run's settings beside its params: [id, label, input attributes, hint, source field].
const RUN_FIELDS = [
  ["device", "device", {}, "cpu, gpu, cuda:0, model=H100, min_memory_gb=40", "device_request", "cpu"],
  ["seed", "seed", { type: "number", step: "1", min: 0 }, "blank: a new random seed (shown on the job's page)", "seed", ""],
  ["timeout_s", "time limit (s)", { type: "number", step: "1", min: 1 }, "blank: the server's default", "timeout_s", ""],
  ["priority", "priority", { type: "number", step: "1", min: -100, max: 100 }, "members up to 0; admins above", "priority", "0"],
  ["gpu_memory_gb", "GPU memory (GB)", { type: "number", step: "any", min: 0 }, "declare it to share a GPU with other jobs",
   "gpu_memory_gb", ""],
];

export async function submitPage() {
  const from = query().get("from");
  const [kinds, source] = await Promise.all([api("/job-kinds"), from ? api(`/jobs/${from}`) : null]);
  const { params: sourceParams, hidden } = unmasked(source ? source.params : {});
  const enabled = kinds.filter((k) => k.enabled);
  const kindSelect = h("select", { id: "kind", name: "kind" },
    enabled.map((k) => h("option", { value: k.name, selected: source && source.kind === k.name }, k.name)));
  const runFields = RUN_FIELDS.flatMap(([id, label, attrs, hint, field, blank]) => {
    const value = source && source[field] !== null && source[field] !== undefined ? source[field] : blank;
    return [h("label", { for: id }, label), h("input", Object.assign({ id, value }, attrs)), h("small", {}, hint)];
  });
  render(h("h1", {}, source ? `Clone job #${source.id}` : "Submit a job"),
    source ? h("p", { class: "muted" }, `Same kind, params, seed, time limit, priority and GPU memory as job #${source.id}: `
      + "on the same kind of device it repeats the run.") : "",
    hidden.length ? h("p", { class: "error", id: "clone-env-note" }, `The values of ${hidden.join(", ")} in env are `
      + `${source.owner}'s and hidden from you: they are left empty; fill them in before you submit.`) : "",
    h("div", { class: "card" }, h("form", { class: "params", id: "submit-form" },
      h("label", { for: "kind" }, "kind"), kindSelect, h("small", { id: "kind-summary" }),
      h("div", { id: "param-fields", style: "display:contents" }),
      h("h3", { class: "form-section" }, "Run"), runFields,
      h("span", {}), h("button", { type: "submit", id: "submit" }, "Submit"))),
    h("p", { id: "submit-error", class: "error" }));
  let schema = null;
  const drawFields = () => {
    const kind = enabled.find((k) => k.name === kindSelect.value);
    schema = kind.params_schema;
    fill("kind-summary", kind.summary);
    const values = source && source.kind === kind.name ? sourceParams : {};
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
        const v = readParam(document.getElementById("param-" + name));
        // Send what differs from the default: the job keeps the kind's defaults for the rest.
        if (v !== undefined && JSON.stringify(v) !== JSON.stringify(p.default)) params[name] = v;
      }
    } catch (e) { fill("submit-error", "A parameter is not valid JSON: " + e.message); return; }
    const value = (id) => document.getElementById(id).value.trim();
    const body = { kind: kindSelect.value, params, device: value("device") || "cpu", priority: parseInt(value("priority") || "0", 10) };
    if (value("seed")) body.seed = parseInt(value("seed"), 10);
    if (value("timeout_s")) body.timeout_s = parseInt(value("timeout_s"), 10);
    if (value("gpu_memory_gb")) body.gpu_memory_gb = parseFloat(value("gpu_memory_gb"));
    try {
      const job = await api("/jobs", { method: "POST", json: body });
      location.hash = "#/jobs/" + job.id;
    } catch (e) { fill("submit-error", e.message); }
  });
}
