// Small SVG charts: line charts (time or step on x) and grouped bar charts. No dependencies.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const MAX_DOTS = 400;
  const COLORS = ["#2f6fdb", "#d64545", "#1f9d55", "#7b5cd6", "#c9881b", "#168a99", "#b24aa8", "#55606e"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, s, anchor) {
    const t = el("text", { x, y, "text-anchor": anchor || "start" }, parent);
    t.textContent = s;
    return t;
  }

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const ticks = [];
    // The last tick is at or above `hi`, so the axis always covers the tallest value.
    const end = Math.ceil(hi / step - 1e-9) * step;
    for (let v = Math.ceil(lo / step) * step; v <= end + step * 1e-6; v += step) ticks.push(+v.toPrecision(12));
    return ticks;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(a >= 10 ? 1 : 2);
    if (a === 0) return "0";
    return v.toPrecision(2);
  }

  function timeLabel(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function legend(series) {
    const div = document.createElement("div");
    div.className = "legend";
    series.forEach((s, i) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color || COLORS[i % COLORS.length];
      span.append(swatch, s.name);
      div.appendChild(span);
    });
    return div;
  }

  // series: [{name, points: [[x, y], ...], color?}]; opts: {time, logY, yMin, yMax, height, yLabel}
  function line(series, opts) {
    opts = opts || {};
    const W = opts.width || 640, H = opts.height || 220, L = 52, R = 12, T = 10, B = 26;
    const svg = el("svg", { class: "chart line-chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
    const all = series.flatMap((s) => s.points).filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (!all.length) {
      text(svg, W / 2, H / 2, opts.empty || "no data yet", "middle");
      return wrap(svg, series, opts);
    }
    const ty = (v) => (opts.logY ? Math.log10(Math.max(v, 1e-12)) : v);
    let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
    if (x1 === x0) x1 = x0 + 1;
    let y0 = opts.yMin !== undefined ? opts.yMin : Math.min(...all.map((p) => ty(p[1])));
    let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...all.map((p) => ty(p[1])));
    if (y1 === y0) { y1 = y0 + 1; }
    if (opts.yMax === undefined && !opts.logY) y1 = niceTicks(y0, y1, 4).slice(-1)[0];
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - (ty(y) - y0) / (y1 - y0)) * (H - T - B);
    for (const v of niceTicks(y0, y1, 4)) {
      const y = T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
      el("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }, svg);
      text(svg, L - 6, y + 4, opts.logY ? fmt(Math.pow(10, v)) : fmt(v), "end");
    }
    const xt = opts.time ? niceTicks(x0 / 60000, x1 / 60000, 5).map((m) => m * 60000) : niceTicks(x0, x1, 6);
    for (const v of xt) {
      const x = sx(v);
      el("line", { class: "axis", x1: x, x2: x, y1: H - B, y2: H - B + 4 }, svg);
      const anchor = x > W - R - 24 ? "end" : x < L + 24 ? "start" : "middle";
      text(svg, x, H - 8, opts.time ? timeLabel(v) : fmt(v), anchor);
    }
    el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
    el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }, svg);
    if (opts.yLabel) text(svg, L + 4, T + 10, opts.yLabel);
    series.forEach((s, i) => {
      const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
      const color = s.color || COLORS[i % COLORS.length];
      el("polyline", { points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
                       stroke: color, "data-series": s.name, "data-points": pts.length }, svg);
      // A dot per data point (up to a few hundred; beyond that the line alone reads better).
      if (pts.length <= MAX_DOTS) {
        const r = pts.length > 60 ? 1.2 : 2.5;
        for (const p of pts) el("circle", { class: "point", cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r, fill: color }, svg);
      }
    });
    return wrap(svg, series, opts);
  }

  // groups: [{label, values: [v per series]}]; series: [{name, color?}]
  function bars(groups, series, opts) {
    opts = opts || {};
    const W = opts.width || 640, L = 52, R = 12, T = 10, B = 40;
    const H = opts.height || 220;
    const svg = el("svg", { class: "chart bar-chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
    const vmax = Math.max(0, ...groups.flatMap((g) => g.values.filter((v) => Number.isFinite(v))));
    if (!groups.length) {
      text(svg, W / 2, H / 2, opts.empty || "nothing in this window", "middle");
      return wrap(svg, series, opts);
    }
    const top = vmax > 0 ? niceTicks(0, vmax, 4).slice(-1)[0] || vmax : 1;
    const ymax = Math.max(top, vmax);
    const sy = (v) => T + (1 - v / ymax) * (H - T - B);
    for (const v of niceTicks(0, ymax, 4)) {
      el("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }, svg);
      text(svg, L - 6, sy(v) + 4, fmt(v), "end");
    }
    const gw = (W - L - R) / groups.length, bw = Math.min(36, (gw * 0.8) / series.length);
    groups.forEach((g, gi) => {
      const gx = L + gi * gw + (gw - bw * series.length) / 2;
      g.values.forEach((v, si) => {
        const h = Math.max(0, (H - T - B) - (sy(v || 0) - T));
        el("rect", { x: gx + si * bw, y: sy(v || 0), width: bw - 2, height: h,
                     fill: series[si].color || COLORS[si % COLORS.length], "data-value": v }, svg);
      });
      text(svg, L + gi * gw + gw / 2, H - B + 16, g.label.length > 18 ? g.label.slice(0, 17) + "…" : g.label, "middle");
    });
    el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
    if (opts.yLabel) text(svg, L + 4, T + 10, opts.yLabel);
    return wrap(svg, series, opts);
  }

  function wrap(svg, series, opts) {
    const div = document.createElement("div");
    if (opts.title) {
      const h = document.createElement("h2");
      h.textContent = opts.title;
      div.appendChild(h);
    }
    div.appendChild(svg);
    if (series.length > 1 || opts.legend) div.appendChild(legend(series));
    return div;
  }

  return { line, bars, COLORS };
})();
