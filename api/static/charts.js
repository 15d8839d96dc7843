// Small SVG charts for the statistics page: stacked bars by review state. No library.
"use strict";

const STATE_COLOURS = {pending: "#f0b429", confirmed: "#d64545", false_positive: "#9aa5b1", rectified: "#3ebd93"};
const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs = {}, text = null) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== null) el.textContent = text;
  return el;
}

// groups: [{label, counts: {pending, confirmed, false_positive, rectified}}]; horizontal when there are
// long labels (rules, sites), vertical for days.
function stackedBars(container, groups, {horizontal = false} = {}) {
  container.innerHTML = "";
  if (!groups.length) {
    container.textContent = "—";
    return;
  }
  const states = Object.keys(STATE_COLOURS);
  const total = (g) => states.reduce((n, s) => n + (g.counts[s] || 0), 0);
  const max = Math.max(1, ...groups.map(total));
  const bar = 22, gap = 8, labelW = horizontal ? 130 : 0, width = 520;
  const height = horizontal ? groups.length * (bar + gap) + 24 : 220;
  const svg = svgEl("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars"});
  if (horizontal) {
    const plotW = width - labelW - 40;
    groups.forEach((g, i) => {
      const y = i * (bar + gap);
      svg.append(svgEl("text", {x: labelW - 6, y: y + bar * 0.7, "text-anchor": "end", class: "label"},
        g.label.length > 16 ? g.label.slice(0, 15) + "…" : g.label));
      let x = labelW;
      for (const s of states) {
        const w = ((g.counts[s] || 0) / max) * plotW;
        if (w > 0) svg.append(svgEl("rect", {x, y, width: w, height: bar, fill: STATE_COLOURS[s], "data-state": s}));
        x += w;
      }
      svg.append(svgEl("text", {x: x + 4, y: y + bar * 0.7, class: "value"}, String(total(g))));
    });
  } else {
    const plotH = height - 40, step = (width - 20) / groups.length, w = Math.min(36, step * 0.7);
    groups.forEach((g, i) => {
      const x = 10 + i * step + (step - w) / 2;
      let y = plotH;
      for (const s of states) {
        const h = ((g.counts[s] || 0) / max) * (plotH - 16);
        if (h > 0) svg.append(svgEl("rect", {x, y: y - h, width: w, height: h, fill: STATE_COLOURS[s], "data-state": s}));
        y -= h;
      }
      svg.append(svgEl("text", {x: x + w / 2, y: y - 4, "text-anchor": "middle", class: "value"}, String(total(g))));
      if (groups.length <= 16 || i % Math.ceil(groups.length / 16) === 0) {
        svg.append(svgEl("text", {x: x + w / 2, y: plotH + 16, "text-anchor": "middle", class: "label"}, g.label));
      }
    });
  }
  container.append(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of states) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = STATE_COLOURS[s];
    item.append(swatch, t(s));
    legend.append(item);
  }
  container.append(legend);
}
