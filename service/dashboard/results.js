// A job's result (a JSON dict) as a person reads it: values in a list, lists of records as
// tables (the GAN's history), square count matrices as a table and a plot (a confusion matrix).
import * as Charts from "./charts.js";
import { h } from "./dom.js";

function num(v) {
  if (typeof v !== "number") return v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v);
  if (Number.isInteger(v)) return v.toLocaleString();
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : +v.toPrecision(4) + "";
}

const isRecord = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isRecords = (v) => Array.isArray(v) && v.length > 0 && v.every(isRecord);
const isMatrix = (v) => Array.isArray(v) && v.length > 1 && v.every((r) => Array.isArray(r) && r.length === v.length
  && r.every((x) => Number.isInteger(x) && x >= 0));

function recordsTable(name, rows) {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return h("div", { class: "result-table", id: "result-" + name },
    h("table", {}, h("tr", {}, cols.map((c) => h("th", { class: "num" }, c))),
      rows.map((r) => h("tr", {}, cols.map((c) => h("td", { class: "num" }, num(r[c])))))));
}

function matrixView(name, m) {
  const total = m.flat().reduce((a, b) => a + b, 0);
  const right = m.reduce((a, r, i) => a + r[i], 0);
  const grid = h("table", { class: "matrix", id: "result-" + name + "-table" },
    h("tr", {}, h("th", {}, "true ↓ predicted →"), m.map((_, j) => h("th", { class: "num" }, j))),
    m.map((r, i) => h("tr", {}, h("th", { class: "num" }, i),
      r.map((v, j) => h("td", { class: "num" + (i === j ? " diag" : v ? " off" : "") }, v)))));
  const plot = Charts.heatmap(m, { xLabel: "predicted class", yLabel: "true class" });
  plot.id = "result-" + name + "-plot";
  return h("div", { class: "matrix-view" },
    h("div", {}, grid, h("p", { class: "muted" }, `${right} of ${total} on the diagonal (${((100 * right) / (total || 1)).toFixed(1)} %)`)),
    plot);
}

export function resultView(result) {
  const scalars = [], blocks = [];
  for (const [k, v] of Object.entries(result || {})) {
    if (isMatrix(v)) blocks.push(h("section", {}, h("h3", {}, k), matrixView(k, v)));
    else if (isRecords(v)) blocks.push(h("section", {}, h("h3", {}, `${k} (${v.length} rows)`), recordsTable(k, v)));
    else if (isRecord(v)) blocks.push(h("section", {}, h("h3", {}, k), resultView(v)));
    else scalars.push([k, Array.isArray(v) ? v.map(num).join(", ") : num(v)]);
  }
  return h("div", { class: "result" },
    scalars.length ? h("dl", { class: "kv" }, scalars.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "num-left" }, v)])) : "",
    blocks);
}
