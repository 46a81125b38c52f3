// The website's slider explorer (06) and drawing pad (09), running in the page.
//
// site/_ext/cvae_site.py puts a placeholder where the notebook saved a widget:
//   <div class="cvae-web cvae-web-explorer" data-state='{"digit": 3, "z": [...], ...}'>
//   <div class="cvae-web cvae-web-pad" data-state='{}'>
// This module turns each into a working widget. The models (the shipped lab CVAE
// and the classifier, exported by `python -m lab_utils.web`) run in cvae_nn.js;
// the pad's canvas is lab_utils/static/drawing_pad.js, the very module the
// JupyterLab widget uses, given a small stand-in for anywidget's `model`.
// Pictures are drawn as the Python widgets draw them (lab_utils.widgets:
// a 28x28 digit at 8x, the row of ten at 2x with grey gaps, the chosen one framed).
import { loadModels, toMnist } from "./cvae_nn.js";
import drawingPad from "./drawing_pad.js";

const BIG_SCALE = 8, ROW_SCALE = 2, ROW_GAP = 6, GAP_GREY = 72, FRAME = 255, SEEN_SCALE = 4;
const EMPTY_MESSAGE = "draw a digit first";

let models = null;  // a promise of {manifest, cvae, classifier}
function getModels() {
  models ??= loadModels(new URL("models/", import.meta.url));
  return models;
}

// ----- pictures ----------------------------------------------------------------------
function grey(v) {  // [0, 1] -> 0..255, as (x * 255).round().clamp(0, 255)
  return Math.min(255, Math.max(0, Math.round(v * 255)));
}

function canvasElement(cls, w, h, cssW, cssH, label) {
  const c = document.createElement("canvas");
  c.className = cls;
  c.width = w;
  c.height = h;
  c.style.width = `${cssW}px`;
  c.style.height = `${cssH}px`;
  c.setAttribute("role", "img");
  c.setAttribute("aria-label", label);
  return c;
}

// Pictures are written as 32-bit pixels (grey, grey, grey, 255) into an ImageData kept
// with each canvas, then put with one putImageData.
const RGBA = new Uint32Array(256);  // grey level -> its opaque RGBA pixel, whatever the byte order
{
  const bytes = new Uint8Array(RGBA.buffer);
  for (let g = 0; g < 256; g++) bytes.set([g, g, g, 255], 4 * g);
}

function imageData(canvas, w, h) {  // the canvas's ImageData, made once, with a Uint32 view
  if (!canvas._cvaeImage || canvas._cvaeImage.width !== w || canvas._cvaeImage.height !== h) {
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    canvas._cvaeImage = { ctx, img, width: w, height: h, px: new Uint32Array(img.data.buffer) };
  }
  return canvas._cvaeImage;
}

function paintDigit(canvas, x, size) {  // one 28x28 image, scaled by CSS (pixelated)
  const { ctx, img, px } = imageData(canvas, size, size);
  for (let i = 0; i < size * size; i++) px[i] = x ? RGBA[grey(x[i]) | 0] : RGBA[0];
  ctx.putImageData(img, 0, 0);
}

function rowSize(n, size) {
  const t = size * ROW_SCALE;
  return [n * (t + ROW_GAP) + ROW_GAP, t + 2 * ROW_GAP];
}

// lab_utils.widgets.row_pixels: ten digits in one strip, grey gaps, the chosen one framed.
function paintRow(canvas, images, chosen, size) {
  const n = images.length, t = size * ROW_SCALE;
  const [W, H] = rowSize(n, size);
  const { ctx, img, px } = imageData(canvas, W, H);
  px.fill(RGBA[GAP_GREY]);
  const frame = RGBA[FRAME], black = RGBA[0];
  for (let i = 0; i < n; i++) {
    const left = ROW_GAP + i * (t + ROW_GAP);
    if (i === chosen) {
      for (let y = ROW_GAP - 2; y < ROW_GAP + t + 2; y++) px.fill(frame, y * W + left - 2, y * W + left + t + 2);
    }
    const x = images[i];
    for (let y = 0; y < t; y++) {
      const dst = (ROW_GAP + y) * W + left;
      if (!x) { px.fill(black, dst, dst + t); continue; }
      if (y % ROW_SCALE) { px.copyWithin(dst, dst - W, dst - W + t); continue; }  // a repeated row
      const src = (y / ROW_SCALE) * size;
      for (let j = 0; j < size; j++) {
        const v = RGBA[grey(x[src + j]) | 0];
        for (let r = 0; r < ROW_SCALE; r++) px[dst + j * ROW_SCALE + r] = v;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
}

function caption(n, size, names) {
  const div = document.createElement("div");
  div.className = "cvae-row-caption";
  div.style.gridTemplateColumns = `repeat(${n}, ${size * ROW_SCALE + ROW_GAP}px)`;
  div.style.paddingLeft = `${ROW_GAP / 2}px`;
  for (let k = 0; k < n; k++) {
    const d = document.createElement("div");
    d.textContent = names[k];
    div.append(d);
  }
  return div;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "html") e.innerHTML = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function slider({ cls, label, min, max, step, value, digits, vertical = false }) {
  const input = el("input", {
    type: "range", class: cls, min, max, step, "aria-label": label,
  });
  input.value = String(value);
  const out = el("output", { class: "cvae-slider-readout", "aria-hidden": "true" });
  const show = () => { out.textContent = Number(input.value).toFixed(digits); };
  input.addEventListener("input", show);
  show();
  const wrap = el("label", { class: `cvae-slider${vertical ? " cvae-slider-vertical" : ""}` },
    el("span", { class: "cvae-slider-label", text: label }), input, out);
  return { input, wrap, show };
}

// A small seeded normal generator for "new noise" (PyTorch's stream cannot be
// reproduced here; the notebook's explorer has its own).
function normalGenerator(seed) {
  let s = seed >>> 0;
  const uniform = () => {  // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

// ----- the slider explorer -------------------------------------------------------------
export class Explorer {
  constructor(host, { cvae, manifest }, state = {}) {
    const d = manifest.explorer;
    this.cvae = cvae;
    this.size = cvae.size;
    const n = cvae.numClasses, D = cvae.latentDim;
    const z = state.z && state.z.length === D ? state.z : d.z;
    const names = state.names && state.names.length === D ? state.names
      : Array.from({ length: D }, (_, i) => `z${i}`);
    this.random = normalGenerator(1234 + (state.digit ?? 0));
    this.renderCount = 0;
    this.lastUpdateMs = 0;
    this._decoded = null;  // [key, images] of the last decode

    this.title = el("div", { class: "cvae-explorer-title", "aria-live": "polite" });
    this.image = canvasElement("cvae-explorer-image", this.size, this.size,
      this.size * BIG_SCALE, this.size * BIG_SCALE, "the decoded digit");
    this.digit = slider({ cls: "cvae-explorer-digit", label: "digit", min: 0, max: n - 1, step: 1,
      value: state.digit ?? d.digit, digits: 0 });
    this.temperature = slider({ cls: "cvae-explorer-temperature", label: "temperature", min: 0,
      max: d.temperature_max, step: 0.05, value: state.temperature ?? d.temperature, digits: 2 });
    this.noiseButton = el("button", { class: "cvae-explorer-new-noise", type: "button",
      title: "draw a fresh z from N(0, I)", text: "new noise" });
    this.noise = z.map((v, i) => slider({ cls: "cvae-explorer-noise", label: names[i],
      min: -d.z_range, max: d.z_range, step: 0.01, value: v, digits: 1, vertical: true }));
    const [rw, rh] = rowSize(n, this.size);
    this.row = canvasElement("cvae-explorer-row", rw, rh, rw, rh, "the same z with every label");
    const controls = el("div", { class: "cvae-explorer-controls" },
      el("div", { class: "cvae-explorer-toprow" }, this.digit.wrap, this.temperature.wrap, this.noiseButton),
      el("div", { html: "<b>noise z</b>, one slider per latent dimension (-3 to 3)" }),
      el("div", { class: "cvae-explorer-noise-grid" }, ...this.noise.map((s) => s.wrap)));
    this.root = el("div", { class: "cvae-explorer cvae-web-widget" },
      el("div", { class: "cvae-explorer-main" },
        el("div", {}, this.title, this.image), controls),
      el("div", { html: "<b>the same z with every label</b> (the chosen one framed)" }),
      this.row, caption(n, this.size, Array.from({ length: n }, (_, k) => String(k))));
    host.replaceChildren(this.root);

    const update = () => this.render();
    for (const s of [this.digit, this.temperature, ...this.noise]) s.input.addEventListener("input", update);
    this.noiseButton.addEventListener("click", () => this.setZ(this.noise.map(() => this.random())));
    this.render();
  }

  get z() { return this.noise.map((s) => Number(s.input.value)); }

  /** Move the noise sliders (clamped to +-3 by the inputs) and the digit; render once. */
  setZ(z, digit = null) {
    z.forEach((v, i) => { this.noise[i].input.value = String(v); this.noise[i].show(); });
    if (digit !== null) { this.digit.input.value = String(digit); this.digit.show(); }
    this.render();
  }

  /** Decode z * temperature with every label (only when they changed) and draw. */
  render() {
    const start = performance.now();
    const t = Number(this.temperature.input.value);
    const z = this.z;
    const key = z.join(",") + "|" + t;
    if (!this._decoded || this._decoded[0] !== key) {
      this._decoded = [key, this.cvae.decodeAll(Float32Array.from(z, (v) => v * t))];
    }
    const images = this._decoded[1];
    const digit = Number(this.digit.input.value);
    paintDigit(this.image, images[digit], this.size);
    paintRow(this.row, images, digit, this.size);
    this.title.innerHTML = `<b>label: ${digit}</b>`;
    this.image.setAttribute("aria-label", `the decoded digit ${digit}`);
    this.renderCount += 1;
    this.lastUpdateMs = performance.now() - start;
  }
}

// ----- the drawing pad ---------------------------------------------------------------
const INK = Float32Array.from({ length: 256 }, (_, v) => v / 255);  // a red byte -> its ink

// What drawing_pad.js needs of anywidget's model: get, set, on, off, save_changes.
function padModel(fields, onSave) {
  const values = { ...fields };
  const handlers = {};
  const emit = (name) => (handlers[name] || []).slice().forEach((f) => f());
  return {
    get: (k) => values[k],
    set: (k, v) => {
      const old = values[k];
      values[k] = v;
      if (old !== v) emit(`change:${k}`);
    },
    on: (name, f) => { (handlers[name] ||= []).push(f); },
    off: (name, f) => { handlers[name] = (handlers[name] || []).filter((g) => g !== f); },
    save_changes: () => onSave(),
  };
}

export class Pad {
  constructor(host, models) {
    const { cvae, classifier, manifest } = models;
    this.models = models;
    this.cvae = cvae;
    this.classifier = classifier;
    this.size = cvae.size;
    this.x = this.z = this.reading = null;
    this.digitFromStudent = false;
    this.explorer = null;
    this.lastUpdateMs = 0;   // the update path alone: pixels -> to_mnist -> ... -> sheet
    this.lastUpdateEnd = 0;  // performance.now() when the latest update was drawn
    this.updates = 0;

    const n = cvae.numClasses;
    this.canvasHost = el("div", { class: "cvae-pad-host" });
    this.seen = canvasElement("cvae-pad-seen", this.size, this.size,
      this.size * SEEN_SCALE, this.size * SEEN_SCALE, "the drawing as the model sees it");
    this.readingEl = el("div", { class: "cvae-pad-reading", role: "status", "aria-live": "polite" });
    this.picker = el("select", { class: "cvae-pad-digit", "aria-label": "digit" },
      ...Array.from({ length: n }, (_, k) => el("option", { value: k, text: String(k) })));
    const [rw, rh] = rowSize(n, this.size);
    this.sheet = canvasElement("cvae-pad-sheet", rw, rh, rw, rh, "your z with every label");
    this.exploreButton = el("button", { class: "cvae-pad-explore", type: "button",
      title: "open the slider explorer at this drawing's z and digit", text: "explore this style" });
    this.explorerBox = el("div", { class: "cvae-pad-explorer" });
    const side = el("div", { class: "cvae-pad-side" },
      el("div", { html: "<b>what the model sees</b> (after to_mnist, 28x28)" }),
      el("div", { class: "cvae-pad-seen-row" }, this.seen,
        el("div", {}, this.readingEl, el("label", { class: "cvae-pad-digit-label" }, "digit ", this.picker))),
      el("div", { html: "<b>your z with every label</b> (the picked digit framed)" }),
      this.sheet, caption(n, this.size, Array.from({ length: n }, (_, k) => String(k))),
      this.exploreButton);
    this.root = el("div", { class: "cvae-drawing-pad cvae-web-widget" },
      el("div", { class: "cvae-pad-main" }, this.canvasHost, side), this.explorerBox);
    host.replaceChildren(this.root);

    // The canvas: the JupyterLab widget's own module, with this page as its "Python".
    const p = manifest.pad;
    // send_png false: this page reads the canvas's pixels itself (processCanvas), so the
    // module skips the PNG it would encode for Python after every stroke.
    this.model = padModel({ size: p.size, pen_width: p.pen_width, png: "", strokes: 0,
      sent: 0, answered: 0, answer_timeout_ms: 10000, send_png: false }, () => this.received());
    this.dispose = drawingPad.render({ model: this.model, el: this.canvasHost });
    this.canvas = this.canvasHost.querySelector("canvas");

    this.picker.addEventListener("change", () => {
      this.digitFromStudent = true;
      if (this.x) { this.showReading(); this.updateSheet(); }
    });
    this.exploreButton.addEventListener("click", () => this.explore());
    this.showEmpty();
  }

  /** drawing_pad.js sent a finished stroke or a Clear: answer it, as Python would. */
  received() {
    try {
      if (!this.model.get("png")) this.showEmpty();
      else this.processCanvas();
    } catch (err) {
      this.readingEl.innerHTML = "";
      this.readingEl.append(el("span", { class: "cvae-pad-error", text: `could not read the drawing: ${err}` }));
      console.error(err);
    }
    // acknowledged after the module has started waiting for the answer
    queueMicrotask(() => this.model.set("answered", this.model.get("sent")));
  }

  /** The canvas's ink (its red channel, white on black) -> the whole update path. */
  processCanvas() {
    const start = performance.now();
    const t = [start];  // the stages' end times, for benchmarks/site.py
    const size = this.canvas.width;
    const data = this.canvas.getContext("2d").getImageData(0, 0, size, size).data;
    if (!this.ink || this.ink.length !== size * size) this.ink = new Float32Array(size * size);
    const ink = this.ink;
    for (let i = 0; i < ink.length; i++) ink[i] = INK[data[4 * i]];
    t.push(performance.now());
    const m = this.models.manifest.pad;
    const x = toMnist(ink, size, size, { box: m.box, field: m.field, inkLevel: m.ink_level });
    t.push(performance.now());
    if (x === null) { this.showEmpty(); return null; }
    this.x = x;
    const { digit, confidence } = this.classifier.classify(x);
    t.push(performance.now());
    this.reading = [digit, confidence];
    if (!this.digitFromStudent) this.picker.value = String(digit);
    paintDigit(this.seen, x, this.size);
    this.showReading();
    t.push(performance.now());
    this.updateSheet(t);
    this.updates += 1;
    this.lastUpdateStart = start;
    this.lastUpdateEnd = performance.now();
    this.lastUpdateMs = this.lastUpdateEnd - start;
    const names = ["read", "to_mnist", "classifier", "seen", "encode", "decodes", "sheet"];
    this.lastStages = Object.fromEntries(names.map((k, i) => [k, t[i + 1] - t[i]]));
    return digit;
  }

  get digit() { return Number(this.picker.value); }

  updateSheet(t = null) {
    this.z = this.cvae.encode(this.x, this.digit);  // z = mu
    if (t) t.push(performance.now());
    const images = this.cvae.decodeAll(this.z);
    if (t) t.push(performance.now());
    paintRow(this.sheet, images, this.digit, this.size);
    if (t) t.push(performance.now());
  }

  showReading() {
    const [digit, confidence] = this.reading;
    const note = digit === this.digit ? "" : `; you picked <b>${this.digit}</b>`;
    this.readingEl.innerHTML = `the classifier reads <b class="cvae-pad-read-digit">${digit}</b> ` +
      `(${Math.round(confidence * 100)}% sure)${note}`;
  }

  showEmpty() {
    this.x = this.z = this.reading = null;
    this.digitFromStudent = false;
    paintDigit(this.seen, null, this.size);
    paintRow(this.sheet, new Array(this.cvae.numClasses).fill(null), -1, this.size);
    this.readingEl.innerHTML = `<i>${EMPTY_MESSAGE}</i>`;
    if (this.explorer) {  // the drawing's style is gone: close its explorer, z back to 0
      this.explorerBox.replaceChildren();
      this.explorer.setZ(new Array(this.cvae.latentDim).fill(0));
    }
  }

  explore() {
    if (!this.z) {
      this.readingEl.innerHTML = `<i>${EMPTY_MESSAGE}, then explore its style</i>`;
      return;
    }
    const host = el("div");
    if (!this.explorer) this.explorer = new Explorer(host, this.models, { digit: this.digit, z: Array.from(this.z) });
    else this.explorer.setZ(Array.from(this.z), this.digit);
    this.explorerBox.replaceChildren(this.explorer.root);
  }
}

// ----- start ------------------------------------------------------------------------
async function start() {
  const hosts = [...document.querySelectorAll(".cvae-web")];
  if (!hosts.length) return;
  window.cvaeLab = { explorers: [], pads: [] };
  let loaded;
  try {
    loaded = await getModels();
  } catch (err) {
    for (const h of hosts) h.textContent = `The models could not be loaded: ${err.message}`;
    throw err;
  }
  for (const host of hosts) {
    const state = JSON.parse(host.dataset.state || "{}");
    if (state.kind === "explorer") window.cvaeLab.explorers.push(new Explorer(host, loaded, state));
    else if (state.kind === "pad") window.cvaeLab.pads.push(new Pad(host, loaded));
  }
  window.cvaeLab.ready = true;
  document.dispatchEvent(new CustomEvent("cvae-lab-ready"));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
