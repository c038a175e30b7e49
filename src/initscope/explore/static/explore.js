// initscope explore: controls -> POST /api/stream -> the post's views, redrawn in place with Plotly.react.
// The server's tables are the numbers of initscope.run; this file only summarises and draws them.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const MAIN = ["init", "gain", "depth", "width", "input_dim", "samples", "activation", "shift", "shift_scale",
              "residual", "norm", "data", "trials", "seed"];
const MULTI = new Set(["init", "metrics"]);
// Sliders beside the number boxes: [min, max, step].
const RANGES = {depth: [1, 200, 1], width: [2, 512, 1], input_dim: [1, 100, 1], samples: [4, 2000, 1],
                trials: [1, 50, 1], gain: [0.05, 4, 0.05], shift_scale: [0, 3, 0.05], residual: [0, 2, 0.05],
                seed: [0, 100, 1]};
const LOG_DECADES = 2;
const LINEAR_ONLY = new Set(["dead_fraction", "linear_fraction", "mean_cosine", "linear_r2", "distance_corr",
                             "jacobian_rank"]);
const DISPLAY_FLOOR = {linear_r2: -1};
const MAX_POINTS = 1000;
const MAX_CURVES = 40;
const PLOT_CONFIG = {responsive: true, displaylogo: false};
const CLIENT = Math.random().toString(36).slice(2) + Date.now().toString(36);

const state = {meta: null, controller: null, timer: null, started: 0, layer: 0, updates: 0, latencies: []};
window.explore = state;  // for tests and the curious: state.updates, state.latencies, state.last

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function asText(value) {
  if (value === null || value === undefined) return "";
  return Array.isArray(value) ? value.join(",") : String(value);
}

// ---------------------------------------------------------------- controls
function buildControls(meta) {
  const main = document.getElementById("main-fields"), more = document.getElementById("more-fields");
  for (const name of meta.fields) {
    const box = el("div", {class: "field", id: "field-" + name});
    box.appendChild(el("label", {for: "in-" + name}, name));
    const choices = meta.choices[name], def = meta.defaults[name];
    let input;
    if (choices && (MULTI.has(name))) {
      input = el("select", {name, id: "in-" + name, multiple: "", size: name === "init" ? 6 : 5});
      for (const c of choices) input.appendChild(el("option", {value: c}, c));
    } else if (choices && (name === "data" || name === "target")) {
      input = el("input", {name, id: "in-" + name, type: "text", list: "list-" + name});
      const list = el("datalist", {id: "list-" + name});
      for (const c of choices) list.appendChild(el("option", {value: c}));
      box.appendChild(list);
    } else if (choices) {
      input = el("select", {name, id: "in-" + name});
      for (const c of choices) input.appendChild(el("option", {value: c}, c));
    } else {
      const integer = Number.isInteger(def) && name !== "shift_scale" && name !== "residual";
      input = el("input", {name, id: "in-" + name, type: "number", step: integer ? "1" : "any"});
      if (def === null) input.setAttribute("placeholder", "default");
    }
    box.appendChild(input);
    if (RANGES[name]) {
      const [lo, hi, step] = RANGES[name];
      const range = el("input", {type: "range", min: lo, max: hi, step, "data-for": name, "aria-label": name + " slider"});
      range.addEventListener("input", () => { input.value = range.value; changed(); });
      input.addEventListener("input", () => { if (input.value !== "") range.value = input.value; });
      range.value = def === null ? 1 : def;
      box.appendChild(range);
    }
    input.addEventListener(input.tagName === "SELECT" ? "change" : "input", changed);
    (MAIN.includes(name) ? main : more).appendChild(box);
  }
}

function setControl(name, value) {
  const input = document.querySelector(`[name="${name}"]`);
  if (!input) return;
  const text = asText(value);
  if (input.multiple) {
    const wanted = new Set(text.split(",").map(s => s.trim()).filter(Boolean));
    for (const option of input.options) option.selected = wanted.has(option.value);
  } else {
    input.value = text;
  }
  const range = document.querySelector(`input[data-for="${name}"]`);
  if (range && text !== "") range.value = text;
}

function readControl(name) {
  const input = document.querySelector(`[name="${name}"]`);
  if (input.multiple) return Array.from(input.selectedOptions).map(o => o.value).join(",");
  return input.value.trim();
}

// The fields that differ from the defaults: the request body and the URL's query.
function currentFields() {
  const fields = {};
  for (const name of state.meta.fields) {
    const value = readControl(name);
    if (value !== "" && value !== asText(state.meta.defaults[name])) fields[name] = value;
  }
  return fields;
}

function changed() {
  clearTimeout(state.timer);
  state.started = performance.now();
  state.timer = setTimeout(request, 30);
}

// ---------------------------------------------------------------- requests
async function request() {
  const fields = currentFields();
  const query = new URLSearchParams(fields).toString();
  history.replaceState(null, "", query ? "?" + query : location.pathname);
  document.getElementById("download").href = "/api/download" + (query ? "?" + query : "");
  if (state.controller) state.controller.abort();  // the server drops it too: same client, newer request
  const controller = state.controller = new AbortController();
  const started = state.started || performance.now();
  setStatus("Computing…", "busy");
  let response;
  try {
    response = await fetch("/api/stream?orient=columns", {
      method: "POST", signal: controller.signal, body: JSON.stringify(fields),
      headers: {"Content-Type": "application/json", "X-Initscope-Client": CLIENT},
    });
  } catch (err) {
    if (err.name !== "AbortError") setStatus("The server did not answer: " + err.message, "error");
    return;
  }
  if (!response.ok) {
    const answer = await response.json().catch(() => ({error: response.statusText}));
    markInvalid(answer);
    setStatus(`${response.status}: ${answer.error}`, "error");
    return;
  }
  markInvalid(null);
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line.trim() && controller === state.controller) await show(JSON.parse(line), started);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") setStatus("The answer broke off: " + err.message, "error");
  }
}

function markInvalid(answer) {
  for (const box of document.querySelectorAll(".field.invalid")) box.classList.remove("invalid");
  if (!answer) return;
  const name = answer.field || ((answer.error || "").match(/^The '([a-z_]+)' parameter/) || [])[1];
  const box = name && document.getElementById("field-" + name);
  if (box) box.classList.add("invalid");
}

function setStatus(text, kind = "") {
  const box = document.getElementById("status");
  box.textContent = text;
  box.className = kind;
}

async function show(message, started) {
  if (message.error) {
    if (!message.superseded) setStatus(`${message.status}: ${message.error}`, "error");
    return;
  }
  const t0 = performance.now();
  effectiveValues(message.config);
  await render(message);
  const now = performance.now();
  state.updates += 1;
  state.last = {depth: message.depth, of: message.of, final: message.final, timing: message.timing_ms,
                latency: now - started, draw: now - t0};
  if (message.final) state.latencies.push(now - started);
  else state.partials = (state.partials || 0) + 1;
  const part = message.final ? "" : ` — layers 0–${message.depth} of ${message.of} so far, computing the rest`;
  setStatus(`Updated in ${Math.round(now - started)} ms (study ${message.timing_ms.run} ms, ` +
            `tables ${message.timing_ms.tables} ms, drawing ${Math.round(now - t0)} ms)${part}`);
  document.body.dataset.updates = String(state.updates);
}

// A field the study set itself (input_dim and samples follow a data set's columns and rows) shows the
// value the run used beside its name, when the control says otherwise.
function effectiveValues(config) {
  for (const name of state.meta.fields) {
    const label = document.querySelector(`label[for="in-${name}"]`);
    if (!label || name === "data") continue;
    let hint = label.querySelector(".used");
    const used = asText(config[name]), shown = readControl(name) || asText(state.meta.defaults[name]);
    if (used === shown || (config[name] === null && shown === "")) {
      if (hint) hint.remove();
      continue;
    }
    if (!hint) label.appendChild(hint = el("span", {class: "used note"}));
    hint.textContent = ` (this run: ${used})`;
  }
}

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

function layerFigure(message) {
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
  const current = layers.includes(state.layer) ? state.layer : layers[layers.length - 1];
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
  names.forEach((init, i) => {
    const col = i % cols, row = Math.floor(i / cols);
    layout[i ? "scene" + (i + 1) : "scene"] = {
      domain: {x: [col / cols, (col + 1) / cols], y: [1 - (row + 1) / rows, 1 - row / rows - 0.04]},
      xaxis: {title: {text: "pc1"}}, yaxis: {title: {text: "pc2"}}, zaxis: {title: {text: "pc3"}}, aspectmode: "data"};
  });
  const frames = layers.map(l => ({name: String(l), data: names.map(init => trace(init, l)),
                                   traces: names.map((_, i) => i), layout: {annotations: titles(l)}}));
  return {data: names.map(init => trace(init, current)), layout, frames, layers};
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

function depthFigure(message) {
  const names = inits(message), grouped = groupMetrics(columns(message.tables.metrics));
  const metrics = message.config.metrics.filter(m => grouped[m]);
  const [cols, rows] = [Math.min(3, metrics.length), Math.ceil(metrics.length / 3)];
  const data = [], titles = [];
  metrics.forEach((metric, n) => {
    const axis = n ? String(n + 1) : "", floor = DISPLAY_FLOOR[metric];
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
    });
    titles.push({metric, log: !LINEAR_ONLY.has(metric) && spansDecades(all)});
  });
  const layout = axesLayout(titles.map(t => t.metric + (DISPLAY_FLOOR[t.metric] !== undefined ? " (clipped at -1)" : "")),
                            cols, rows, "layer", "", {});
  titles.forEach((t, n) => { if (t.log) layout["yaxis" + (n ? n + 1 : "")].type = "log"; });
  layout.height = 250 * rows + 80;
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

// ---------------------------------------------------------------- verdict
// The study's verdict in words (initscope.study.verdict: what `initscope run` prints last and the report
// shows first), then its run-wide notes, then the flags table: the first layer where each problem appears.
function renderVerdict(message) {
  const box = document.getElementById("verdict");
  const opened = Boolean(document.querySelector("#flags[open]"));  // keep the reader's choice across updates
  box.textContent = "";
  const verdict = message.verdict || {};
  const list = el("ul", {class: "verdict"});
  for (const v of verdict.initializers || []) {
    const item = el("li");
    item.appendChild(el("strong", {}, v.title));
    item.appendChild(document.createTextNode(": " + v.sentences.join(" ")));
    list.appendChild(item);
  }
  box.appendChild(list);
  for (const note of verdict.notes || []) box.appendChild(el("p", {class: "note"}, note));
  const rows = verdict.flags || [];
  if (!rows.length) return;
  const details = el("details", opened ? {id: "flags", open: ""} : {id: "flags"});
  details.appendChild(el("summary", {}, "Flags: the first layer where each problem appears"));
  const table = el("table", {class: "flags"}), head = el("tr");
  const keys = Object.keys(rows[0]);
  for (const k of keys) head.appendChild(el("th", {}, k));
  table.appendChild(head);
  for (const row of rows) {
    const tr = el("tr");
    keys.forEach((k, i) => {
      const text = String(row[k]);
      tr.appendChild(el(i ? "td" : "th", i ? {class: text === "never" ? "never" : (text === "not measured" ? "" : "hit")} : {}, text));
    });
    table.appendChild(tr);
  }
  details.appendChild(table);
  box.appendChild(details);
}

// ---------------------------------------------------------------- render
async function render(message) {
  const ms = {}, t = () => performance.now();
  let t0 = t();
  renderVerdict(message);
  const medians = medianSpectra(columns(message.tables.spectra), inits(message));
  const layers = layerFigure(message);
  const spectra = spectraFigure(message, medians), heat = heatmapFigure(message, medians);
  const depth = depthFigure(message);
  ms.figures = t() - t0;
  t0 = t();
  const div = document.getElementById("fig-layers");
  await Plotly.react(div, {data: layers.data, layout: layers.layout, frames: layers.frames}, PLOT_CONFIG);
  div.dataset.frames = String(layers.frames.length);
  if (!div.dataset.bound) {  // remember the slider's layer across updates
    div.on("plotly_sliderchange", e => { state.layer = Number(e.step.label); });
    div.dataset.bound = "1";
  }
  ms.layers = t() - t0;
  for (const [id, fig] of [["fig-spectra", spectra], ["fig-heatmap", heat], ["fig-depth", depth]]) {
    t0 = t();
    await Plotly.react(id, fig.data, fig.layout, PLOT_CONFIG);
    ms[id.slice(4)] = t() - t0;
  }
  state.draws = ms;  // where the drawing time goes, per figure
}

// ---------------------------------------------------------------- download
// Fetched rather than followed, so that a refused request (400, 413, 503) shows its message here
// instead of being saved as the zip.
async function download(event) {
  event.preventDefault();
  const link = event.currentTarget;
  setStatus("Preparing the download (the run, its CSVs and report.html)…", "busy");
  const response = await fetch(link.getAttribute("href"));
  if (!response.ok) {
    const answer = await response.json().catch(() => ({error: response.statusText}));
    setStatus(`${response.status}: ${answer.error}`, "error");
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const save = el("a", {href: url, download: "initscope-run.zip"});
  document.body.appendChild(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  setStatus("Downloaded initscope-run.zip.");
}

// ---------------------------------------------------------------- start
async function start() {
  document.getElementById("download").addEventListener("click", download);
  const meta = state.meta = await (await fetch("/api/meta")).json();
  buildControls(meta);
  const initial = {...meta.defaults, ...meta.preload};
  for (const [key, value] of new URLSearchParams(location.search)) {
    if (meta.fields.includes(key)) initial[key] = value;
  }
  for (const name of meta.fields) setControl(name, initial[name]);
  state.layer = 0;
  changed();
}

start().catch(err => setStatus("Could not start: " + err.message, "error"));
