// Small SVG charts: line charts (time or step on x), grouped bars, and a heatmap. No dependencies.

const NS = "http://www.w3.org/2000/svg";
const MAX_DOTS = 400;
export const COLORS = ["#2f6fdb", "#d64545", "#1f9d55", "#7b5cd6", "#c9881b", "#168a99", "#b24aa8", "#55606e"];
const CHAR_PX = 6.6; // width of one 11 px label character, for margins that never clip a label

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, s, anchor, cls) {
  const t = el("text", { x, y, "text-anchor": anchor || "start" }, parent);
  if (cls) t.setAttribute("class", cls);
  t.textContent = s;
  return t;
}

// Ticks at 1, 2 or 5 × 10^k covering [lo, hi]; `integer` keeps the step at 1 or more.
export function niceTicks(lo, hi, n, integer) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  // The last tick is at or above `hi`, so the axis always covers the tallest value.
  const end = Math.ceil(hi / step - 1e-9) * step;
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= end + step * 1e-6; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

export function fmt(v, integer) {
  const a = Math.abs(v);
  if (integer || Number.isInteger(v)) {
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return +(v / 1e3).toFixed(1) + "k";
    return String(Math.round(v));
  }
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(a >= 10 ? 1 : 2);
  if (a === 0) return "0";
  return v.toPrecision(2);
}

// Labels for ticks `step` apart: as many decimals as the step needs ("0.5", not "0.50").
function tickLabels(ticks, integer) {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  const big = Math.max(...ticks.map(Math.abs));
  if (integer || big >= 1e4 || step >= 1) return ticks.map((v) => fmt(v, true));
  const decimals = Math.min(8, Math.ceil(-Math.log10(step) - 1e-9));
  return ticks.map((v) => (v === 0 ? "0" : step < 1e-3 ? v.toExponential(1) : v.toFixed(decimals)));
}

// Time ticks on round local-time boundaries; a label carries the date once the axis spans days.
const SEC = 1000, MIN = 60 * SEC, HOUR = 60 * MIN, DAY = 24 * HOUR;
const TIME_STEPS = [5 * SEC, 10 * SEC, 15 * SEC, 30 * SEC, MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR,
                    12 * HOUR, DAY, 2 * DAY, 7 * DAY];

function timeTicks(x0, x1, n) {
  const step = TIME_STEPS.find((s) => (x1 - x0) / s <= n) || 7 * DAY;
  const offset = new Date(x0).getTimezoneOffset() * MIN; // round to local midnight, not UTC's
  const ticks = [];
  for (let t = Math.ceil((x0 - offset) / step) * step + offset; t <= x1; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(ms, span, step) {
  const d = new Date(ms);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (step < MIN) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (span < 20 * HOUR) return hm;
  const day = d.toLocaleDateString([], { month: "short", day: "numeric" });
  return step >= DAY || (d.getHours() === 0 && d.getMinutes() === 0) ? day : `${day} ${hm}`;
}

function legend(series) {
  const div = document.createElement("div");
  div.className = "legend";
  series.forEach((s, i) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    const color = s.color || COLORS[i % COLORS.length];
    swatch.style.background = s.dash ? `repeating-linear-gradient(90deg, ${color} 0 4px, transparent 4px 7px)` : color;
    span.append(swatch, s.name);
    if (s.detail) {
      const small = document.createElement("small");
      small.textContent = " " + s.detail;
      span.append(small);
    }
    div.appendChild(span);
  });
  return div;
}

// A range that shows a lone value in the middle rather than on the frame.
function padded(lo, hi, integer) {
  if (hi > lo) return [lo, hi];
  const pad = integer ? 1 : Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
  return [lo - pad, hi + pad];
}

// series: [{name, detail?, points: [[x, y], ...], band?: [[x, lo, hi], ...], color?}]
// opts: {time, integerX, logY, xMin, xMax, yMin, yMax, height, title, legend, empty, yLabel}
export function line(series, opts) {
  opts = opts || {};
  const W = opts.width || 640, H = opts.height || 220, R = 14, T = 10, B = 26;
  const svg = el("svg", { class: "chart line-chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const all = series.flatMap((s) => s.points).filter((p) => p[1] !== null && Number.isFinite(p[1]));
  if (!all.length) {
    text(svg, W / 2, H / 2, opts.empty || "no data yet", "middle");
    return wrap(svg, series, opts);
  }
  const ty = (v) => (opts.logY ? Math.log10(Math.max(v, 1e-12)) : v);
  const bandValues = series.flatMap((s) => (s.band || []).flatMap((b) => [b[1], b[2]]));
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  if (opts.xMin !== undefined) x0 = Math.min(x0, opts.xMin);
  if (opts.xMax !== undefined) x1 = Math.max(x1, opts.xMax);
  if (x1 === x0) [x0, x1] = opts.time ? [x0 - 5 * MIN, x1 + 5 * MIN] : padded(x0, x1, opts.integerX);
  const ys = all.map((p) => ty(p[1])).concat(bandValues.map(ty));
  let y0 = opts.yMin !== undefined ? opts.yMin : Math.min(...ys);
  let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
  [y0, y1] = padded(y0, y1, false);
  if (opts.yMax === undefined && !opts.logY) y1 = niceTicks(y0, y1, 4).slice(-1)[0];
  const yTicks = niceTicks(y0, y1, 4).filter((v) => v >= y0 - 1e-9 && v <= y1 + 1e-9);
  const yLabels = opts.logY ? yTicks.map((v) => fmt(Math.pow(10, v))) : tickLabels(yTicks, false);
  const L = Math.max(36, 12 + CHAR_PX * Math.max(...yLabels.map((s) => s.length)));
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const syRaw = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const sy = (y) => syRaw(ty(y));
  yTicks.forEach((v, i) => {
    el("line", { class: "grid", x1: L, x2: W - R, y1: syRaw(v), y2: syRaw(v) }, svg);
    text(svg, L - 6, syRaw(v) + 4, yLabels[i], "end", "y-tick");
  });
  let xt, xLabel;
  if (opts.time) {
    const { ticks, step } = timeTicks(x0, x1, 6);
    xt = ticks;
    xLabel = (v) => timeLabel(v, x1 - x0, step);
  } else {
    xt = niceTicks(x0, x1, 6, opts.integerX).filter((v) => v >= x0 && v <= x1);
    const labels = tickLabels(xt, opts.integerX);
    xLabel = (v) => labels[xt.indexOf(v)];
  }
  for (const v of xt) {
    const x = sx(v), label = xLabel(v), half = (label.length * CHAR_PX) / 2;
    el("line", { class: "axis", x1: x, x2: x, y1: H - B, y2: H - B + 4 }, svg);
    const anchor = x + half > W - 2 ? "end" : x - half < 2 ? "start" : "middle";
    text(svg, x, H - 8, label, anchor, "x-tick");
  }
  el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
  el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }, svg);
  if (opts.yLabel) text(svg, L + 4, T + 10, opts.yLabel);
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    if (s.band && s.band.length) {
      // The min–max envelope of downsampled buckets: spikes a mean would hide stay visible.
      const upper = s.band.map((b) => `${sx(b[0]).toFixed(1)},${sy(b[2]).toFixed(1)}`);
      const lower = s.band.slice().reverse().map((b) => `${sx(b[0]).toFixed(1)},${sy(b[1]).toFixed(1)}`);
      el("polygon", { class: "band", points: upper.concat(lower).join(" "), fill: color }, svg);
    }
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    const poly = el("polyline", { points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
                                  stroke: color, "data-series": s.name, "data-points": pts.length }, svg);
    if (s.dash) poly.setAttribute("stroke-dasharray", "5 4");
    // A dot per data point (up to a few hundred; beyond that the line alone reads better).
    if (pts.length <= MAX_DOTS && !s.band && !s.dash) {
      const r = pts.length > 60 ? 1.2 : 2.5;
      for (const p of pts) el("circle", { class: "point", cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r, fill: color }, svg);
    }
  });
  return wrap(svg, series, opts);
}

// groups: [{label, values: [v per series]}]; series: [{name, color?}]
export function bars(groups, series, opts) {
  opts = opts || {};
  const W = opts.width || 640, R = 12, T = 10, B = 40;
  const H = opts.height || 220;
  const svg = el("svg", { class: "chart bar-chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const vmax = Math.max(0, ...groups.flatMap((g) => g.values.filter((v) => Number.isFinite(v))));
  if (!groups.length) {
    text(svg, W / 2, H / 2, opts.empty || "nothing in this window", "middle");
    return wrap(svg, series, opts);
  }
  const top = vmax > 0 ? niceTicks(0, vmax, 4).slice(-1)[0] || vmax : 1;
  const ymax = Math.max(top, vmax);
  const ticks = niceTicks(0, ymax, 4);
  const labels = tickLabels(ticks, false);
  const L = Math.max(36, 12 + CHAR_PX * Math.max(...labels.map((s) => s.length)));
  const sy = (v) => T + (1 - v / ymax) * (H - T - B);
  ticks.forEach((v, i) => {
    el("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }, svg);
    text(svg, L - 6, sy(v) + 4, labels[i], "end", "y-tick");
  });
  const gw = (W - L - R) / groups.length, bw = Math.min(36, (gw * 0.8) / series.length);
  const maxChars = Math.max(4, Math.floor(gw / CHAR_PX));
  groups.forEach((g, gi) => {
    const gx = L + gi * gw + (gw - bw * series.length) / 2;
    g.values.forEach((v, si) => {
      const h = Math.max(0, (H - T - B) - (sy(v || 0) - T));
      el("rect", { x: gx + si * bw, y: sy(v || 0), width: bw - 2, height: h,
                   fill: series[si].color || COLORS[si % COLORS.length], "data-value": v }, svg);
    });
    const label = g.label.length > maxChars ? g.label.slice(0, maxChars - 1) + "…" : g.label;
    text(svg, L + gi * gw + gw / 2, H - B + 16, label, "middle", "x-tick");
  });
  el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
  if (opts.yLabel) text(svg, L + 4, T + 10, opts.yLabel);
  return wrap(svg, series, opts);
}

// A matrix of counts (rows: true class, columns: predicted), shaded by each row's share.
export function heatmap(matrix, opts) {
  opts = opts || {};
  const n = matrix.length, cell = Math.max(22, Math.min(40, Math.floor(420 / Math.max(n, 1))));
  const L = 46, T = 36, W = L + n * cell + 8, H = T + n * cell + 8;
  const svg = el("svg", { class: "chart heatmap", viewBox: `0 0 ${W} ${H}`, role: "img", style: `max-width:${W}px` });
  text(svg, L + (n * cell) / 2, 12, opts.xLabel || "predicted", "middle", "axis-title");
  const yt = text(svg, 12, T + (n * cell) / 2, opts.yLabel || "true", "middle", "axis-title");
  yt.setAttribute("transform", `rotate(-90 12 ${T + (n * cell) / 2})`);
  matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    text(svg, L - 6, T + i * cell + cell / 2 + 4, String(i), "end");
    text(svg, L + i * cell + cell / 2, T - 6, String(i), "middle");
    row.forEach((v, j) => {
      const share = v / total;
      const fill = i === j ? `rgba(31,157,85,${0.15 + 0.85 * share})` : v ? `rgba(214,69,69,${0.15 + 0.85 * share})` : "#f6f7f9";
      el("rect", { x: L + j * cell, y: T + i * cell, width: cell - 1, height: cell - 1, fill, "data-value": v }, svg);
      if (v) text(svg, L + j * cell + cell / 2, T + i * cell + cell / 2 + 4, String(v), "middle", share > 0.6 ? "on-dark" : "");
    });
  });
  return wrap(svg, [], opts);
}

function wrap(svg, series, opts) {
  const div = document.createElement("div");
  if (opts.title) {
    const h = document.createElement("h2");
    h.textContent = opts.title;
    div.appendChild(h);
  }
  div.appendChild(svg);
  if (series.length > 1 || (opts.legend && series.length)) div.appendChild(legend(series));
  return div;
}
