// The CVAE Lab models in the browser: a small hand-written forward pass.
//
// Reads what `python -m lab_utils.web OUTDIR` writes (models.json and the weight
// files) and runs the few operations the lab CVAE and the classifier need:
// conv2d, linear, relu, sigmoid, 2x2 max pooling, nearest x2 upsampling. Also
// `toMnist`, lab_utils.handwriting.to_mnist step for step. Plain ES module, no
// DOM: the same file runs in the page and in Node (tests/test_web.py).
// Tensors are Float32Arrays in (C, H, W) order, like PyTorch's without the batch.

let HALF = null;  // float16 bits -> float32, a 65,536-entry table made on first use

function halfTable() {
  if (HALF) return HALF;
  HALF = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v;
    if (exp === 0) v = frac * 2 ** -24;                        // subnormal
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    HALF[h] = sign * v;
  }
  return HALF;
}

/** The tensors of one model: its manifest entry + the bytes of its weight file. */
export function readTensors(entry, buffer) {
  const view = new DataView(buffer);
  const tensors = {};
  for (const [name, t] of Object.entries(entry.tensors)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (t.dtype === "float16") {
      const table = halfTable();
      for (let i = 0; i < n; i++) out[i] = table[view.getUint16(t.offset + 2 * i, true)];
    } else if (t.dtype === "float32") {
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(t.offset + 4 * i, true);
    } else {
      throw new Error(`${name}: unknown dtype ${t.dtype}`);
    }
    tensors[name] = { data: out, shape: t.shape };
  }
  return tensors;
}

// ----- the operations ----------------------------------------------------------------
// 3x3, stride 1, zero padding 1 (every conv of the lab model and the classifier): the
// input is copied once into a zero-bordered buffer, each output pixel is summed in a
// register over the channels and the nine taps; input channels that are all zero
// (nine of the encoder's ten label maps) are skipped.
function conv3x3(x, [C, H, W], w, b) {
  const O = w.shape[0];
  const Hp = H + 2, Wp = W + 2, P = Hp * Wp;
  const xp = new Float32Array(C * P);
  const active = [];
  for (let c = 0; c < C; c++) {
    let any = false;
    for (let y = 0; y < H; y++) {
      const src = (c * H + y) * W, dst = c * P + (y + 1) * Wp + 1;
      for (let i = 0; i < W; i++) {
        const v = x[src + i];
        xp[dst + i] = v;
        if (v !== 0) any = true;
      }
    }
    if (any) active.push(c);
  }
  const out = new Float32Array(O * H * W);
  const wd = w.data;
  const nA = active.length;
  for (let o = 0; o < O; o++) {
    const bo = b.data[o];
    for (let y = 0; y < H; y++) {
      const orow = (o * H + y) * W;
      for (let xx = 0; xx < W; xx++) {
        let s = bo;
        for (let a = 0; a < nA; a++) {
          const c = active[a];
          const p = c * P + y * Wp + xx;
          const k = (o * C + c) * 9;
          s += wd[k] * xp[p] + wd[k + 1] * xp[p + 1] + wd[k + 2] * xp[p + 2]
            + wd[k + 3] * xp[p + Wp] + wd[k + 4] * xp[p + Wp + 1] + wd[k + 5] * xp[p + Wp + 2]
            + wd[k + 6] * xp[p + 2 * Wp] + wd[k + 7] * xp[p + 2 * Wp + 1] + wd[k + 8] * xp[p + 2 * Wp + 2];
        }
        out[orow + xx] = s;
      }
    }
  }
  return [out, [O, H, W]];
}

// Nearest x2 upsampling followed by a 3x3 conv (padding 1), in one pass over the small
// map: each output pixel of parity (py, px) sees only 2x2 distinct input pixels, so the
// nine taps fold into four (rows 0 | 1+2 for even rows, 0+1 | 2 for odd ones; columns
// alike). Same result as upsample-then-conv, 2.25 times fewer multiplications.
function upsample2Conv3x3(x, [C, H, W], w, b) {
  const O = w.shape[0];
  const Hp = H + 2, Wp = W + 2, P = Hp * Wp;
  const xp = new Float32Array(C * P);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < H; y++) xp.set(x.subarray((c * H + y) * W, (c * H + y + 1) * W), c * P + (y + 1) * Wp + 1);
  }
  const wd = w.data;
  // k[(((o * C + c) * 2 + py) * 2 + px) * 4 + (2 * dy + dx)]: the folded 2x2 kernels
  const k = new Float64Array(O * C * 16);
  const fold = [[[0], [1, 2]], [[0, 1], [2]]];  // fold[parity][d]: the 3x3 rows (cols) it sums
  for (let o = 0; o < O; o++) {
    for (let c = 0; c < C; c++) {
      const base = (o * C + c) * 9;
      for (let py = 0; py < 2; py++) {
        for (let px = 0; px < 2; px++) {
          for (let dy = 0; dy < 2; dy++) {
            for (let dx = 0; dx < 2; dx++) {
              let v = 0;
              for (const r of fold[py][dy]) for (const q of fold[px][dx]) v += wd[base + 3 * r + q];
              k[(((o * C + c) * 2 + py) * 2 + px) * 4 + 2 * dy + dx] = v;
            }
          }
        }
      }
    }
  }
  const Ho = 2 * H, Wo = 2 * W;
  const out = new Float32Array(O * Ho * Wo);
  for (let o = 0; o < O; o++) {
    const bo = b.data[o];
    for (let y = 0; y < Ho; y++) {
      const py = y & 1, r0 = (y >> 1) + py;  // padded row of the upper of the two input rows
      for (let xx = 0; xx < Wo; xx++) {
        const px = xx & 1, q0 = (xx >> 1) + px;
        let s = bo;
        for (let c = 0; c < C; c++) {
          const p = c * P + r0 * Wp + q0;
          const kk = (((o * C + c) * 2 + py) * 2 + px) * 4;
          s += k[kk] * xp[p] + k[kk + 1] * xp[p + 1] + k[kk + 2] * xp[p + Wp] + k[kk + 3] * xp[p + Wp + 1];
        }
        out[(o * Ho + y) * Wo + xx] = s;
      }
    }
  }
  return [out, [O, Ho, Wo]];
}

// Any square kernel, stride and zero padding (the general case, e.g. the wide model's
// strided convs).
function conv2d(x, shape, w, b, stride, pad) {
  const [C, H, W] = shape;
  const [O, Ci, K] = w.shape;
  if (Ci !== C) throw new Error(`conv2d: ${C} input channels, the weight wants ${Ci}`);
  if (K === 3 && stride === 1 && pad === 1) return conv3x3(x, shape, w, b);
  const Ho = Math.floor((H + 2 * pad - K) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - K) / stride) + 1;
  const out = new Float32Array(O * Ho * Wo);
  const wd = w.data;
  for (let o = 0; o < O; o++) {
    const plane = out.subarray(o * Ho * Wo, (o + 1) * Ho * Wo);
    plane.fill(b.data[o]);
    for (let c = 0; c < C; c++) {
      const xc = c * H * W;
      for (let ky = 0; ky < K; ky++) {
        for (let kx = 0; kx < K; kx++) {
          const wv = wd[((o * C + c) * K + ky) * K + kx];
          if (wv === 0) continue;
          // the output columns whose input column ox*stride + kx - pad is inside the image
          const ox0 = Math.max(0, Math.ceil((pad - kx) / stride));
          const ox1 = Math.min(Wo, Math.floor((W - 1 + pad - kx) / stride) + 1);
          for (let oy = 0; oy < Ho; oy++) {
            const iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= H) continue;
            const row = xc + iy * W - pad + kx;
            const orow = oy * Wo;
            for (let ox = ox0; ox < ox1; ox++) plane[orow + ox] += wv * x[row + ox * stride];
          }
        }
      }
    }
  }
  return [out, [O, Ho, Wo]];
}

function linear(x, w, b) {
  const [O, I] = w.shape;
  if (x.length !== I) throw new Error(`linear: ${x.length} inputs, the weight wants ${I}`);
  const out = new Float32Array(O);
  const wd = w.data;
  for (let o = 0; o < O; o++) {
    let s = 0;
    const r = o * I;
    for (let i = 0; i < I; i++) s += wd[r + i] * x[i];
    out[o] = s + b.data[o];
  }
  return out;
}

function maxpool2d(x, [C, H, W]) {
  const Ho = Math.floor(H / 2), Wo = Math.floor(W / 2);
  const out = new Float32Array(C * Ho * Wo);
  for (let c = 0; c < C; c++) {
    for (let oy = 0; oy < Ho; oy++) {
      for (let ox = 0; ox < Wo; ox++) {
        const i = (c * H + 2 * oy) * W + 2 * ox;
        out[(c * Ho + oy) * Wo + ox] = Math.max(x[i], x[i + 1], x[i + W], x[i + W + 1]);
      }
    }
  }
  return [out, [C, Ho, Wo]];
}

function upsampleNearest(x, [C, H, W], s) {
  const Ho = H * s, Wo = W * s;
  const out = new Float32Array(C * Ho * Wo);
  for (let c = 0; c < C; c++) {
    for (let oy = 0; oy < Ho; oy++) {
      const src = (c * H + Math.floor(oy / s)) * W;
      const dst = (c * Ho + oy) * Wo;
      for (let ox = 0; ox < Wo; ox++) out[dst + ox] = x[src + Math.floor(ox / s)];
    }
  }
  return [out, [C, Ho, Wo]];
}

/** Run a list of operations (a model's program from models.json) on `x` of `shape`. */
export function run(ops, tensors, x, shape) {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    const next = ops[i + 1];
    if (op.op === "upsample_nearest" && op.scale === 2 && next && next.op === "conv2d"
        && next.stride === 1 && next.padding === 1 && tensors[next.weight].shape[2] === 3) {
      [x, shape] = upsample2Conv3x3(x, shape, tensors[next.weight], tensors[next.bias]);
      i += 1;
      continue;
    }
    switch (op.op) {
      case "conv2d":
        [x, shape] = conv2d(x, shape, tensors[op.weight], tensors[op.bias], op.stride, op.padding);
        break;
      case "linear":
        x = linear(x, tensors[op.weight], tensors[op.bias]);
        shape = [x.length];
        break;
      case "relu":
        for (let i = 0; i < x.length; i++) if (x[i] < 0) x[i] = 0;
        break;
      case "sigmoid":
        for (let i = 0; i < x.length; i++) x[i] = 1 / (1 + Math.exp(-x[i]));
        break;
      case "maxpool2d":
        [x, shape] = maxpool2d(x, shape);
        break;
      case "upsample_nearest":
        [x, shape] = upsampleNearest(x, shape, op.scale);
        break;
      case "flatten":
        shape = [x.length];
        break;
      case "reshape":
        if (op.shape.reduce((a, b) => a * b, 1) !== x.length) throw new Error("reshape: wrong size");
        shape = op.shape.slice();
        break;
      default:
        throw new Error(`unknown operation ${op.op}`);
    }
  }
  return [x, shape];
}

// ----- the models --------------------------------------------------------------------
export class CVAE {
  constructor(entry, buffer) {
    this.entry = entry;
    this.tensors = readTensors(entry, buffer);
    this.latentDim = entry.config.latent_dim;
    this.numClasses = entry.config.num_classes;
    this.size = entry.config.image_size;
  }

  /** z (latent_dim) and a label -> the image (size*size floats in [0, 1]). */
  decode(z, label) {
    const h = new Float32Array(this.latentDim + this.numClasses);  // [z ; one-hot]
    h.set(z);
    h[this.latentDim + label] = 1;
    return run(this.entry.decoder, this.tensors, h, [h.length])[0];
  }

  /** The same z with every label: an array of num_classes images. */
  decodeAll(z) {
    const out = [];
    for (let k = 0; k < this.numClasses; k++) out.push(this.decode(z, k));
    return out;
  }

  /** An image (size*size floats) and its label -> mu (latent_dim), the drawing's style. */
  encode(x, label) {
    const n = this.size * this.size;
    const h = new Float32Array((1 + this.numClasses) * n);  // the image + 10 label maps
    h.set(x);
    h.fill(1, (1 + label) * n, (2 + label) * n);
    return run(this.entry.encoder, this.tensors, h, [1 + this.numClasses, this.size, this.size])[0];
  }
}

export class Classifier {
  constructor(entry, buffer) {
    this.entry = entry;
    this.tensors = readTensors(entry, buffer);
    this.size = entry.config.image_size;
  }

  logits(x) {
    return run(this.entry.ops, this.tensors, Float32Array.from(x), [1, this.size, this.size])[0];
  }

  /** An image -> {digit, confidence, probs}: the softmax's largest entry. */
  classify(x) {
    const logits = this.logits(x);
    const top = Math.max(...logits);
    const e = Array.from(logits, (v) => Math.exp(v - top));
    const total = e.reduce((a, b) => a + b, 0);
    const probs = e.map((v) => v / total);
    let digit = 0;
    for (let k = 1; k < probs.length; k++) if (probs[k] > probs[digit]) digit = k;
    return { digit, confidence: probs[digit], probs };
  }
}

/** Fetch models.json and the weight files from `base` (a URL of the folder). */
export async function loadModels(base, fetchFn = globalThis.fetch) {
  const url = (name) => new URL(name, base).href;
  const response = await fetchFn(url("models.json"));
  if (!response.ok) throw new Error(`models.json: HTTP ${response.status}`);
  const manifest = await response.json();
  const weights = async (entry) => {
    const r = await fetchFn(url(`${entry.file}?v=${entry.sha256}`));
    if (!r.ok) throw new Error(`${entry.file}: HTTP ${r.status}`);
    return r.arrayBuffer();
  };
  const [cvaeBytes, classifierBytes] = await Promise.all(
    [weights(manifest.models.cvae), weights(manifest.models.classifier)]);
  return {
    manifest,
    cvae: new CVAE(manifest.models.cvae, cvaeBytes),
    classifier: new Classifier(manifest.models.classifier, classifierBytes),
  };
}

// ----- to_mnist ----------------------------------------------------------------------
const f32 = Math.fround;

function roundHalfEven(v) {  // Python's round()
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// PyTorch's antialiased bilinear weights (aten UpSampleKernel, _compute_weights_aa),
// in float32 like the CPU kernel: for each output index, the first input index and
// the normalised weights of the inputs it averages.
function aaWeights(inSize, outSize) {
  const scale = f32(inSize / outSize);
  const support = scale >= 1 ? f32(scale) : 1;
  const invscale = scale >= 1 ? f32(1 / scale) : 1;
  const result = [];
  for (let i = 0; i < outSize; i++) {
    const center = f32(scale * f32(i + 0.5));
    const xmin = Math.max(Math.trunc(f32(center - support) + 0.5), 0);
    const xsize = Math.min(Math.trunc(f32(center + support) + 0.5), inSize) - xmin;
    const w = new Float32Array(Math.max(xsize, 0));
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      let x = f32(f32(f32(j + xmin) - center) + 0.5) * invscale;
      x = f32(Math.abs(x));
      const v = x < 1 ? f32(1 - x) : 0;
      w[j] = v;
      total = f32(total + v);
    }
    if (total !== 0) for (let j = 0; j < xsize; j++) w[j] = f32(w[j] / total);
    result.push([xmin, w]);
  }
  return result;
}

// F.interpolate(mode="bilinear", antialias=True, align_corners=False) of one (h, w)
// plane: the rows first, then the columns, each pass skipped if its size is unchanged.
function resizeAA(src, h, w, newH, newW) {
  let cur = src;
  if (newW !== w) {
    const ws = aaWeights(w, newW);
    const out = new Float32Array(h * newW);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < newW; x++) {
        const [x0, wt] = ws[x];
        let s = 0;
        for (let j = 0; j < wt.length; j++) s = f32(s + f32(cur[y * w + x0 + j] * wt[j]));
        out[y * newW + x] = s;
      }
    }
    cur = out;
  }
  if (newH !== h) {
    const ws = aaWeights(h, newH);
    const out = new Float32Array(newH * newW);
    for (let y = 0; y < newH; y++) {
      const [y0, wt] = ws[y];
      for (let x = 0; x < newW; x++) {
        let s = 0;
        for (let j = 0; j < wt.length; j++) s = f32(s + f32(cur[(y0 + j) * newW + x] * wt[j]));
        out[y * newW + x] = s;
      }
    }
    cur = out;
  }
  return cur;
}

/**
 * lab_utils.handwriting.to_mnist in the page: white ink on black, `pixels` (H*W,
 * floats in [0, 1]) -> the 28x28 image the model sees (Float32Array), or null for
 * an empty canvas. Crop the ink's box, fit its longer side into 20 px with an
 * anti-aliased resize, shift by whole pixels so the centre of mass lands at (14, 14).
 */
export function toMnist(pixels, H, W, { box = 20, field = 28, inkLevel = 0.5 } = {}) {
  let max = 0;
  for (let i = 0; i < H * W; i++) if (pixels[i] > max) max = pixels[i];
  if (max < 0.5 / 255) return null;
  const level = f32(inkLevel * max);
  let top = H, bottom = -1, left = W, right = -1;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      if (pixels[y * W + x] >= level) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  const h = bottom + 1 - top, w = right + 1 - left;
  const crop = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) crop[y * w + x] = pixels[(top + y) * W + left + x];
  }
  const scale = box / Math.max(h, w);
  const newH = Math.max(1, roundHalfEven(h * scale));
  const newW = Math.max(1, roundHalfEven(w * scale));
  const small = resizeAA(crop, h, w, newH, newW);
  let total = 0, my = 0, mx = 0;
  for (let y = 0; y < newH; y++) {
    for (let x = 0; x < newW; x++) {
      const v = Math.min(1, Math.max(0, small[y * newW + x]));
      small[y * newW + x] = v;
      total += v;
      my += v * y;
      mx += v * x;
    }
  }
  const cy = my / total, cx = mx / total;
  const centre = field / 2;
  const y0 = Math.floor(centre - cy + 0.5), x0 = Math.floor(centre - cx + 0.5);
  const out = new Float32Array(field * field);
  for (let y = Math.max(0, -y0); y < Math.min(newH, field - y0); y++) {
    for (let x = Math.max(0, -x0); x < Math.min(newW, field - x0); x++) {
      out[(y0 + y) * field + x0 + x] = small[y * newW + x];
    }
  }
  return out;
}
