// initscope explore: the server's tables -> the post's figures (plain Plotly figure objects).
// Summaries only (medians, quantiles over trials, as the report computes them); no number is made up here.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const LOG_DECADES = 2;
// How each metric is drawn comes from the server's registry (/api/meta's "metrics": {name: {label, linear,
// floor}}), set once by setMetricDisplay: no list of metric names here decides an axis.
let METRIC_DISPLAY = {};
function setMetricDisplay(display) { METRIC_DISPLAY = display || {}; }
function displayOf(metric) {
  const d = METRIC_DISPLAY[metric] || {};
  return {label: d.label || metric, linear: Boolean(d.linear), floor: (d.floor === null || d.floor === undefined)
          ? undefined : d.floor};
}
const MAX_POINTS = 1000;
const MAX_CURVES = 40;

// ---------------------------------------------------------------- tables
function columns(table) {
  const out = {};
  for (const name of table.columns) {
    out[name] = name in table.data ? table.data[name] : new Array(table.rows).fill(table.constant[name]);
  }
  out.rows = table.rows;
  return out;
}

function inits(message) { return message.config.init; }

function colour(i) { return PALETTE[i % PALETTE.length]; }

function quantile(sorted, q) {  // pandas' default (linear interpolation)
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// metric -> init -> layer -> [values over trials] (finite only; null is NaN)
function groupMetrics(t) {
  const out = {};
  for (let i = 0; i < t.rows; i++) {
    const m = t.metric[i], init = t.init[i], layer = t.layer[i], v = t.value[i];
    const byInit = (out[m] = out[m] || {}), byLayer = (byInit[init] = byInit[init] || {});
    (byLayer[layer] = byLayer[layer] || []);
    if (v !== null && Number.isFinite(v)) byLayer[layer].push(v);
  }
  return out;
}

// init -> layer -> k -> [σ over trials]; medians as init -> [layer][k]
function medianSpectra(t, names) {
  const acc = {};
  for (let i = 0; i < t.rows; i++) {
    const a = (acc[t.init[i]] = acc[t.init[i]] || []);
    const row = (a[t.layer[i]] = a[t.layer[i]] || []);
    (row[t.k[i] - 1] = row[t.k[i] - 1] || []).push(t.singular_value[i]);
  }
  const out = {};
  for (const init of names) {
    out[init] = (acc[init] || []).map(row => (row || []).map(vals => {
      const s = vals.slice().sort((a, b) => a - b);
      return quantile(s, 0.5);
    }));
  }
  return out;
}

// ---------------------------------------------------------------- figures
function grid(n) { const cols = Math.min(n, 3); return [cols, Math.ceil(n / cols)]; }

function layerFigure(message, layer) {
  const names = inits(message), t = columns(message.tables.projections);
  const cube = {};  // init -> layer -> {x, y, z, c}
  const layerSet = new Set();
  const stride = Math.max(1, Math.ceil((message.config.samples || 1) / MAX_POINTS));
  for (let i = 0; i < t.rows; i++) {
    if (t.sample[i] % stride) continue;
    const byLayer = (cube[t.init[i]] = cube[t.init[i]] || {});
    const p = (byLayer[t.layer[i]] = byLayer[t.layer[i]] || {x: [], y: [], z: [], c: []});
    p.x.push(t.pc1[i]); p.y.push(t.pc2[i]); p.z.push(t.pc3[i]); p.c.push(t.target[i]);
    layerSet.add(t.layer[i]);
  }
  const layers = Array.from(layerSet).sort((a, b) => a - b);
  const [cols, rows] = grid(names.length);
  const current = layers.includes(layer) ? layer : layers[layers.length - 1];
  const trace = (init, layer) => {
    const p = (cube[init] || {})[layer] || {x: [], y: [], z: [], c: []};
    return {type: "scatter3d", mode: "markers", x: p.x, y: p.y, z: p.z, name: init, showlegend: false,
            scene: names.indexOf(init) ? "scene" + (names.indexOf(init) + 1) : "scene",
            marker: {size: 3, color: p.c, coloraxis: "coloraxis", opacity: 0.85},
            hovertemplate: `${init}, layer ${layer}<br>pc1 %{x:.4g}, pc2 %{y:.4g}, pc3 %{z:.4g}<extra></extra>`};
  };
  // Each view's title says how far the points spread, against the input's (the post's first observation).
  const spread = p => {
    if (!p || !p.x.length) return NaN;
    let sum = 0, n = 0;
    for (let j = 0; j < p.x.length; j++) {
      const d = p.x[j] * p.x[j] + p.y[j] * p.y[j] + p.z[j] * p.z[j];
      if (Number.isFinite(d)) { sum += d; n += 1; }
    }
    return n ? Math.sqrt(sum / n) : NaN;
  };
  const note = (init, layer) => {
    const base = spread((cube[init] || {})[layers[0]]), here = spread((cube[init] || {})[layer]);
    if (layer === 0) return "the input";
    if (!Number.isFinite(here)) return "non-finite (overflow)";
    return base > 0 ? `spread ${here / base < 1e-3 || here / base > 1e4 ? (here / base).toExponential(2) :
                                 (here / base).toPrecision(3)}× the input's` : `spread ${here.toPrecision(3)}`;
  };
  const titles = layer => names.map((init, i) => ({
    text: `<b>${init}</b>, layer ${layer}: ${note(init, layer)}`, showarrow: false, xref: "paper", yref: "paper",
    x: (i % cols + 0.5) / cols, y: 1 - Math.floor(i / cols) / rows, xanchor: "center", yanchor: "bottom"}));
  const layout = {
    height: 430 * rows + 80, margin: {l: 0, r: 0, t: 30, b: 70}, uirevision: "layers",
    coloraxis: {colorscale: "Viridis", colorbar: {title: {text: "target"}, len: 0.8}},
    annotations: titles(current),
    sliders: [{active: layers.indexOf(current), pad: {t: 20}, currentvalue: {prefix: "layer ", visible: true},
      steps: layers.map(l => ({method: "animate", label: String(l),
        args: [[String(l)], {mode: "immediate", frame: {duration: 0, redraw: true}, transition: {duration: 0}}]}))}],
  };
  Object.assign(layout, scenes(names));
  const frames = layers.map(l => ({name: String(l), data: names.map(init => trace(init, l)),
                                   traces: names.map((_, i) => i), layout: {annotations: titles(l)}}));
  return {data: names.map(init => trace(init, current)), layout, frames, layers};
}

// One 3-D scene per initializer, on a grid of at most three columns.
function scenes(names) {
  const [cols, rows] = grid(names.length), out = {};
  names.forEach((init, i) => {
    const col = i % cols, row = Math.floor(i / cols);
    out[i ? "scene" + (i + 1) : "scene"] = {
      domain: {x: [col / cols, (col + 1) / cols], y: [1 - (row + 1) / rows, 1 - row / rows - 0.04]},
      xaxis: {title: {text: "pc1"}}, yaxis: {title: {text: "pc2"}}, zaxis: {title: {text: "pc3"}}, aspectmode: "data",
      // A camera a little further out than plotly's (1.25, 1.25, 1.25): a scene is clipped to its domain, and
      // at the default distance the pc3 title and the outer tick labels fall outside it.
      camera: {eye: {x: 1.6, y: 1.6, z: 1.35}}};
  });
  return out;
}

// The empty 3-D scenes, drawn while the first answer is computed: a software-rendered WebGL context takes
// seconds to start (its shaders compile), which would otherwise come after the answer.
function emptyScenes(names) {
  const data = names.map((init, i) => ({type: "scatter3d", mode: "markers", x: [], y: [], z: [], showlegend: false,
                                        scene: i ? "scene" + (i + 1) : "scene"}));
  return {data, layout: {height: 430 * grid(names.length)[1] + 80, margin: {l: 0, r: 0, t: 30, b: 70},
                         uirevision: "layers", ...scenes(names)}};
}

function spectraFigure(message, medians) {
  const names = inits(message), [cols, rows] = grid(names.length), data = [];
  const depth = message.depth;
  // At most MAX_CURVES layers per panel (evenly spaced, the input and the last layer always): hundreds of
  // lines would cost more to draw than they show.
  const step = Math.max(1, Math.ceil((depth + 1) / MAX_CURVES));
  names.forEach((init, i) => {
    const axis = i ? String(i + 1) : "";
    (medians[init] || []).forEach((row, layer) => {
      if (layer % step && layer !== depth) return;
      const shade = depth ? layer / depth : 0;
      data.push({type: "scatter", mode: "lines", x: row.map((_, k) => k + 1), y: row.map(v => v > 0 ? v : null),
                 xaxis: "x" + axis, yaxis: "y" + axis, showlegend: false,
                 line: {width: layer === 0 || layer === depth ? 2.5 : 1, color: viridis(shade)},
                 hovertemplate: `${init}<br>layer ${layer}<br>k %{x}<br>σ %{y:.4g}<extra></extra>`});
    });
  });
  const layout = axesLayout(names, cols, rows, "component k", "singular value σ_k (median)", {type: "log"});
  layout.height = 330 * rows + 60;
  return {data, layout};
}

function heatmapFigure(message, medians) {
  const names = inits(message), [cols, rows] = grid(names.length), data = [];
  const eps = message.config.dtype === "float32" ? 1.1920929e-7 : 2.220446049250313e-16;
  names.forEach((init, i) => {
    const axis = i ? String(i + 1) : "", m = medians[init] || [];
    const K = Math.max(0, ...m.map(r => (r || []).length));
    const z = [];
    for (let k = 0; k < K; k++) z.push(m.map(row => (row && row[k] > 0) ? Math.log10(row[k]) : null));
    const above = m.map(row => row && row.length ? row.filter(v => v > row[0] * Math.sqrt(eps)).length + 0.5 : null);
    const layers = m.map((_, l) => l);
    data.push({type: "heatmap", x: layers, y: Array.from({length: K}, (_, k) => k + 1), z, coloraxis: "coloraxis",
               xaxis: "x" + axis, yaxis: "y" + axis,
               hovertemplate: `${init}<br>layer %{x}<br>k %{y}<br>σ = 10^%{z:.2f}<extra></extra>`});
    data.push({type: "scatter", mode: "lines", x: layers, y: above, xaxis: "x" + axis, yaxis: "y" + axis,
               showlegend: false, line: {color: "white", width: 2, dash: "dash", shape: "hvh"},
               hovertemplate: "layer %{x}: components above the noise floor<extra></extra>"});
  });
  const layout = axesLayout(names, cols, rows, "layer", "component k", {});
  layout.coloraxis = {colorscale: "Viridis", colorbar: {title: {text: "log10 σ"}}};
  layout.height = 330 * rows + 60;
  return {data, layout};
}

// theory: the server's theory lines for these panels ({curves: {metric: {init: {layers, values, label}}}}),
// drawn dashed in each initializer's colour, as in the report; null until the verdict message brings them.
function depthFigure(message, theory) {
  const curves = (theory && theory.curves) || {};
  let dashed = false;
  const names = inits(message), grouped = groupMetrics(columns(message.tables.metrics));
  const metrics = message.config.metrics.filter(m => grouped[m]);
  const [cols, rows] = [Math.min(3, metrics.length), Math.ceil(metrics.length / 3)];
  const data = [], titles = [];
  metrics.forEach((metric, n) => {
    const axis = n ? String(n + 1) : "", floor = displayOf(metric).floor;
    const all = [];
    names.forEach((init, i) => {
      const byLayer = grouped[metric][init] || {};
      const layers = Object.keys(byLayer).map(Number).sort((a, b) => a - b);
      const stats = layers.map(l => {
        const s = byLayer[l].slice().sort((a, b) => a - b);
        const clip = v => (floor !== undefined && v < floor) ? floor : v;
        return s.length ? [clip(quantile(s, 0.5)), clip(quantile(s, 0.1)), clip(quantile(s, 0.9))] : [null, null, null];
      });
      stats.forEach(s => all.push(s[0]));
      const c = colour(i), common = {xaxis: "x" + axis, yaxis: "y" + axis, legendgroup: init};
      // The 10-90% band as one closed polygon (up along the 90% line, back along the 10% line):
      // one trace instead of two, which halves the drawing of this, the page's largest figure.
      data.push({...common, type: "scatter", mode: "lines", x: layers.concat(layers.slice().reverse()),
                 y: stats.map(s => s[2]).concat(stats.map(s => s[1]).reverse()), fill: "toself",
                 fillcolor: rgba(c, 0.18), line: {width: 0}, showlegend: false, hoverinfo: "skip"});
      data.push({...common, type: "scatter", mode: "lines", x: layers, y: stats.map(s => s[0]), name: init,
                 showlegend: n === 0, line: {color: c, width: 2},
                 hovertemplate: `${init}<br>${metric}<br>layer %{x}: %{y:.4g}<extra></extra>`});
      const line = (curves[metric] || {})[init];
      if (line) {
        dashed = true;
        data.push({...common, type: "scatter", mode: "lines", x: line.layers, y: line.values, showlegend: false,
                   name: `${init}: theory`, line: {color: c, width: 2, dash: "dash"},
                   hovertemplate: `${init}<br>${line.label}<br>layer %{x}: %{y:.4g}<extra></extra>`});
      }
    });
    titles.push({metric, floor, log: !displayOf(metric).linear && spansDecades(all)});
  });
  const layout = axesLayout(titles.map(t => t.metric + (t.floor !== undefined ? ` (clipped at ${t.floor})` : "")),
                            cols, rows, "layer", "", {});
  titles.forEach((t, n) => { if (t.log) layout["yaxis" + (n ? n + 1 : "")].type = "log"; });
  layout.height = 250 * rows + 80;
  if (dashed) {  // one neutral legend entry explains the dashes, as in the report
    data.push({type: "scatter", mode: "lines", x: [null], y: [null], name: "theory (dashed)", hoverinfo: "skip",
               line: {color: "#555", dash: "dash", width: 2}});
  }
  layout.showlegend = true;
  layout.legend = {orientation: "h", y: 1.02, yanchor: "bottom", x: 0};
  return {data, layout};
}

function spansDecades(values) {
  const pos = values.filter(v => v !== null && Number.isFinite(v) && v > 0);
  return pos.length > 1 && Math.log10(Math.max(...pos) / Math.min(...pos)) > LOG_DECADES;
}

function axesLayout(titles, cols, rows, xTitle, yTitle, yExtra) {
  const layout = {margin: {l: 60, r: 10, t: 40, b: 45}, annotations: [], template: "plotly_white",
                  plot_bgcolor: "white", showlegend: false};
  const gapX = 0.06, gapY = rows > 1 ? Math.min(0.12, 0.6 / rows) : 0;
  titles.forEach((title, i) => {
    const col = i % cols, row = Math.floor(i / cols), s = i ? String(i + 1) : "";
    const x0 = col / cols + (col ? gapX / 2 : 0), x1 = (col + 1) / cols - (col < cols - 1 ? gapX / 2 : 0);
    const y1 = 1 - row / rows - (row ? gapY / 2 : 0), y0 = 1 - (row + 1) / rows + (row < rows - 1 ? gapY / 2 : 0);
    // Only the bottom panel of each column names its x axis: the others would run into the titles below.
    const bottom = i + cols >= titles.length;
    layout["xaxis" + s] = {domain: [x0, x1], anchor: "y" + s, title: {text: bottom ? xTitle : ""}, zeroline: false};
    layout["yaxis" + s] = {domain: [y0, y1], anchor: "x" + s, title: {text: yTitle}, ...yExtra};
    layout.annotations.push({text: `<b>${title}</b>`, showarrow: false, xref: "paper", yref: "paper",
                             x: (x0 + x1) / 2, y: y1, xanchor: "center", yanchor: "bottom"});
  });
  return layout;
}

function viridis(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i, c = stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function rgba(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},${alpha})`;
}
