// initscope explore: controls -> POST /api/stream -> the post's views, redrawn in place with Plotly.react.
// The server's tables are the numbers of initscope.run; this file only summarises and draws them.
"use strict";

const MAIN = ["init", "gain", "depth", "width", "input_dim", "samples", "activation", "shift", "shift_scale",
              "residual", "norm", "data", "trials", "seed"];
const MULTI = new Set(["init", "metrics"]);
// Sliders beside the number boxes: [min, max, step].
const RANGES = {depth: [1, 200, 1], width: [2, 512, 1], input_dim: [1, 100, 1], samples: [4, 2000, 1],
                trials: [1, 50, 1], gain: [0.05, 4, 0.05], shift_scale: [0, 3, 0.05], residual: [0, 2, 0.05],
                seed: [0, 100, 1]};
const PLOT_CONFIG = {responsive: true, displaylogo: false};
const CLIENT = Math.random().toString(36).slice(2) + Date.now().toString(36);

const state = {meta: null, controller: null, timer: null, started: 0, layer: 0, updates: 0, latencies: [], painted: [],
               stale: new Set(), shown: null, inflight: false};
window.explore = state;  // for tests and the curious: updates, latencies, painted, last (with its marks), stale


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

// A change asks at once when nothing is in flight (a click, a typed value, a slider's first step). While a
// small answer is on its way, the newest change waits for it and then goes out (changes in between are
// folded into it): a dragged slider redraws at the pace of the study instead of never, as it would if each
// step cancelled the one before. A streamed answer (a large config, several depth prefixes) is cancelled
// by the change instead -- the server stops computing it at its next layer.
function changed() {
  clearTimeout(state.timer);
  clearTimeout(state.restTimer);
  state.started = performance.now();
  if (state.inflight && !state.streaming) {
    state.pending = true;
    return;
  }
  state.timer = setTimeout(request, state.inflight ? 30 : 0);
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
  const marks = {queued: started, sent: performance.now()};
  Object.assign(state, {inflight: true, streaming: false, pending: false});
  try {
    await exchange(fields, controller, started, marks);
  } finally {
    if (controller === state.controller) {
      state.inflight = false;
      if (state.pending) request();  // the change that waited for this answer
    }
  }
}

async function exchange(fields, controller, started, marks) {
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
  marks.headers = performance.now();
  state.plan = response.headers.get("X-Initscope-Plan");  // the depth prefixes the answer will come in
  state.streaming = (state.plan || "").includes(",");
  if (state.streaming && state.pending) {  // a change came before we knew this answer would be long
    state.pending = false;
    state.timer = setTimeout(request, 0);  // which cancels this one
    return;
  }
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let pieces = [];  // of the line being received: a deep run's tables are megabytes in many chunks
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      const text = decoder.decode(value, {stream: true});
      pieces.push(text);
      if (!text.includes("\n")) continue;  // search only the new text, never the megabytes before it
      const lines = pieces.join("").split("\n");
      pieces = [lines.pop()];  // an incomplete last line waits for the next chunk
      for (const line of newest(lines)) {
        if (!line.trim() || controller !== state.controller) continue;
        const at = performance.now(), message = JSON.parse(line);
        if (message.part === "tables") Object.assign(marks, {body: at, parsed: performance.now()});
        await show(message, started, marks);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") setStatus("The answer broke off: " + err.message, "error");
  }
}

// Lines that arrived together while the page was drawing: a depth prefix whose tables are followed by a
// deeper prefix's is skipped (its layers are in the deeper one), so the page catches up instead of lagging.
function newest(lines) {
  let last = -1;
  lines.forEach((line, i) => { if (line.startsWith('{"config"')) last = i; });
  return last > 0 ? lines.slice(last) : lines;
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

// Each depth prefix comes as two messages: its tables (drawn at once: the figures in view first), then the
// verdict in words, computed on the server while the page draws. The update is complete with the verdict.
async function show(message, started, marks) {
  if (message.error) {
    if (!message.superseded) setStatus(`${message.status}: ${message.error}`, "error");
    return;
  }
  if (message.part === "tables") {
    const t0 = performance.now();
    message.started = started;
    effectiveValues(message.config);
    await render(message);
    marks.drawn = performance.now();
    state.drawing = marks.drawn - t0;
    return;
  }
  renderVerdict(message);
  theoryLines(message.theory);
  const now = performance.now(), shown = state.shown;
  marks.verdict = now;
  state.updates += 1;
  state.last = {depth: message.depth, of: message.of, final: message.final, latency: now - started, started,
                timing: {...shown.timing_ms, ...message.timing_ms}, draw: state.drawing,
                marks: Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, Math.round(v - started)]))};
  const last = state.last;
  if (!state.stale.size) last.settled = last.latency;
  // After the next frame: the browser has painted what was drawn (WebGL scenes included).
  requestAnimationFrame(() => setTimeout(() => {
    last.painted = performance.now() - started;
    if (last.final) state.painted.push(last.painted);
  }, 0));
  if (message.final) state.latencies.push(now - started);
  else state.partials = (state.partials || 0) + 1;
  // Every update shown for this request: [layers shown, of, ms since the change] (streaming's progress).
  if (!state.shownLog || state.shownLog.started !== started) state.shownLog = Object.assign([], {started});
  state.shownLog.push([message.depth, message.of, Math.round(now - started)]);
  const part = message.final ? "" : ` — layers 0–${message.depth} of ${message.of} so far, computing the rest`;
  setStatus(`Updated in ${Math.round(now - started)} ms (study ${shown.timing_ms.run} ms, tables ` +
            `${shown.timing_ms.tables} ms, verdict ${message.timing_ms.verdict} ms, drawing ` +
            `${Math.round(state.drawing)} ms)${part}`);
  document.body.dataset.updates = String(state.updates);
  scheduleRest();
}

// The theory lines come with the verdict: the metric panels get them at their next drawing (at once when
// they are on screen and were drawn without them), and the notes say why an initializer has none.
function theoryLines(theory) {
  const shown = state.shown;
  if (!shown || !theory) return;
  shown.theory = theory;
  document.getElementById("theory-notes").textContent = theory.notes.length ? theory.notes.join("; ") + "." : "";
  if (!Object.keys(theory.curves).length || state.stale.has("depth")) return;
  state.stale.add("depth");
  if (onScreen(document.getElementById("fig-depth"))) draw("depth");
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
// A new answer redraws the figures on screen at once; the others are marked
// stale and redrawn once the controls rest (REST_MS after the update: a slider being dragged redraws only
// what is seen) or as soon as they scroll into view. `state.stale` is empty when every figure shows the
// latest answer.
const FIGURES = {
  layers: (message, memo) => layerFigure(message, state.layer),
  spectra: (message, memo) => spectraFigure(message, memo.medians()),
  heatmap: (message, memo) => heatmapFigure(message, memo.medians()),
  depth: (message, memo) => depthFigure(message, message.theory || null),
};
const REST_MS = 200;

function onScreen(div) {
  const box = div.getBoundingClientRect();
  return box.bottom > 0 && box.top < window.innerHeight && box.width > 0;
}

async function render(message) {
  clearTimeout(state.restTimer);
  let medians = null;
  state.shown = message;
  state.memo = {medians: () => medians || (medians = medianSpectra(columns(message.tables.spectra), inits(message)))};
  state.stale = new Set(Object.keys(FIGURES));
  state.draws = {};  // where the drawing time goes, per figure (ms)
  const names = Object.keys(FIGURES), seen = names.filter(n => onScreen(document.getElementById("fig-" + n)));
  state.deferred = names.filter(n => !seen.includes(n));
  for (const name of seen) await draw(name);
}

async function draw(name) {
  if (!state.stale.has(name)) return;
  const message = state.shown, t0 = performance.now();
  state.stale.delete(name);
  const fig = FIGURES[name](message, state.memo);
  const div = document.getElementById("fig-" + name);
  if (name === "layers" && state.warming) await state.warming;
  await Plotly.react(div, {data: fig.data, layout: fig.layout, frames: fig.frames || []}, PLOT_CONFIG);
  if (name === "layers") {
    div.dataset.frames = String(fig.frames.length);
    if (!div.dataset.bound) {  // remember the slider's layer across updates
      div.on("plotly_sliderchange", e => { state.layer = Number(e.step.label); });
      div.dataset.bound = "1";
    }
  }
  state.draws[name] = performance.now() - t0;
  // Every figure shows the latest answer: how long after the change (once its verdict is in).
  if (message === state.shown && !state.stale.size && state.last && state.last.started === message.started) {
    state.last.settled = performance.now() - state.last.started;
  }
}

function scheduleRest() {
  clearTimeout(state.restTimer);
  state.restTimer = setTimeout(async () => {
    const message = state.shown;
    for (const name of Array.from(state.stale)) {
      if (message !== state.shown || state.inflight) return;  // a newer answer, or one on its way
      await draw(name);
    }
  }, REST_MS);
}

const watcher = new IntersectionObserver(entries => {
  for (const entry of entries) {
    const name = entry.target.id.slice(4);
    if (entry.isIntersecting && state.stale && state.stale.has(name) && state.shown) draw(name);
  }
}, {rootMargin: "25% 0px"});  // a little before they come into view

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
  setMetricDisplay(meta.metrics);
  buildControls(meta);
  const initial = {...meta.defaults, ...meta.preload};
  for (const [key, value] of new URLSearchParams(location.search)) {
    if (meta.fields.includes(key)) initial[key] = value;
  }
  for (const name of meta.fields) setControl(name, initial[name]);
  for (const name of Object.keys(FIGURES)) watcher.observe(document.getElementById("fig-" + name));
  state.layer = 0;
  changed();
  // After the first request has gone out (timers run in order): start the 3-D scenes meanwhile.
  setTimeout(() => {
    const fig = emptyScenes(asText(initial.init).split(",").map(s => s.trim()).filter(Boolean));
    state.warming = Plotly.newPlot("fig-layers", fig.data, fig.layout, PLOT_CONFIG).catch(() => null);
  }, 0);
}

start().catch(err => setStatus("Could not start: " + err.message, "error"));
