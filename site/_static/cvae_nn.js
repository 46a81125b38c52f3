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
// Scratch buffers, reused from call to call (nothing here re-enters): the zero-bordered
// copies of a conv's input, keyed by their shape so that the borders stay zero, and the
// float64 accumulators. What an operation returns is always a fresh array.
const SCRATCH = new Map();
function scratch(key, n, Type) {
  let buf = SCRATCH.get(key);
  if (!buf || buf.length < n) {
    buf = new Type(n);
    SCRATCH.set(key, buf);
  }
  return buf;
}

// x (C, H, W) -> a zero-bordered copy (C, H + 2, W + 2) and the channels that are not all
// zero (nine of the encoder's ten label maps are).
function padded(x, C, H, W) {
  const Wp = W + 2, P = (H + 2) * Wp;
  const xp = scratch(`pad ${C}x${H}x${W}`, C * P, Float32Array);
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
  return [xp, active];
}

// The accumulated plane (float64) -> one output channel, through the ReLU if it follows.
function store(acc, out, offset, n, relu) {
  if (relu) for (let i = 0; i < n; i++) { const v = acc[i]; out[offset + i] = v > 0 ? v : 0; }
  else for (let i = 0; i < n; i++) out[offset + i] = acc[i];
}

// Taps of an absent second output channel (an odd last channel): its sums go to scratch.
const NINE_ZEROS = new Float32Array(9);  // conv3x3's nine taps
const EIGHT_ZEROS = new Float64Array(8);  // upsample2Conv3x3's eight folded taps

// 3x3, stride 1, zero padding 1 (every conv of the lab model and the classifier): each
// active input channel (zero ones are skipped) adds its nine taps, held in locals, to a
// float64 plane per output channel, sliding a 3x3 window of input values along each
// row; two output channels at a time, so that each window is loaded once for both.
function conv3x3(x, [C, H, W], w, b, relu = false) {
  const O = w.shape[0];
  const Wp = W + 2, P = (H + 2) * Wp, n = H * W;
  const [xp, active] = padded(x, C, H, W);
  const acc = scratch("acc", 2 * n, Float64Array);
  const out = new Float32Array(O * n);
  const wd = w.data, bd = b.data, nA = active.length;
  for (let o = 0; o < O; o += 2) {
    const pair = o + 1 < O;
    acc.fill(bd[o], 0, n);
    acc.fill(pair ? bd[o + 1] : 0, n, 2 * n);  // an odd last channel: the second half is scratch
    for (let a = 0; a < nA; a++) {
      const c = active[a];
      const k = (o * C + c) * 9;
      const w0 = wd[k], w1 = wd[k + 1], w2 = wd[k + 2], w3 = wd[k + 3], w4 = wd[k + 4],
        w5 = wd[k + 5], w6 = wd[k + 6], w7 = wd[k + 7], w8 = wd[k + 8];
      // The next output channel's taps (zeros when there is none: its sums are discarded).
      const vd = pair ? wd : NINE_ZEROS, m = pair ? k + C * 9 : 0;
      const v0 = vd[m], v1 = vd[m + 1], v2 = vd[m + 2], v3 = vd[m + 3], v4 = vd[m + 4],
        v5 = vd[m + 5], v6 = vd[m + 6], v7 = vd[m + 7], v8 = vd[m + 8];
      for (let y = 0; y < H; y++) {
        let r0 = c * P + y * Wp, r1 = r0 + Wp, r2 = r1 + Wp;
        let a0 = xp[r0], a1 = xp[r0 + 1], b0 = xp[r1], b1 = xp[r1 + 1], c0 = xp[r2], c1 = xp[r2 + 1];
        const end = y * W + W;
        for (let i = y * W; i < end; i++) {
          const a2 = xp[r0 + 2], b2 = xp[r1 + 2], c2 = xp[r2 + 2];
          acc[i] += w0 * a0 + w1 * a1 + w2 * a2 + w3 * b0 + w4 * b1 + w5 * b2
            + w6 * c0 + w7 * c1 + w8 * c2;
          acc[i + n] += v0 * a0 + v1 * a1 + v2 * a2 + v3 * b0 + v4 * b1 + v5 * b2
            + v6 * c0 + v7 * c1 + v8 * c2;
          a0 = a1; a1 = a2; b0 = b1; b1 = b2; c0 = c1; c1 = c2;
          r0++; r1++; r2++;
        }
      }
    }
    store(acc, out, o * n, pair ? 2 * n : n, relu);
  }
  return [out, [O, H, W]];
}

// The 3x3 kernels folded for nearest x2 upsampling (see upsample2Conv3x3), once per
// weight tensor: k[((o * C + c) * 2 + py) * 8 + 4 * px + (2 * dy + dx)].
const FOLDED = new WeakMap();
function folded(w) {
  let k = FOLDED.get(w);
  if (k) return k;
  const [O, C] = w.shape, wd = w.data;
  k = new Float64Array(O * C * 16);
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
              k[((o * C + c) * 2 + py) * 8 + 4 * px + 2 * dy + dx] = v;
            }
          }
        }
      }
    }
  }
  FOLDED.set(w, k);
  return k;
}

// Nearest x2 upsampling followed by a 3x3 conv (padding 1), in one pass over the small
// map: each output pixel of parity (py, px) sees only 2x2 distinct input pixels, so the
// nine taps fold into four (rows 0 | 1+2 for even rows, 0+1 | 2 for odd ones; columns
// alike). Same result as upsample-then-conv, 2.25 times fewer multiplications. Output
// row 2i + py reads the padded rows i + py and i + py + 1; output columns 2j and 2j + 1
// read the padded columns j, j + 1 and j + 1, j + 2. Two output channels at a time.
function upsample2Conv3x3(x, [C, H, W], w, b, relu = false) {
  const O = w.shape[0];
  const Wp = W + 2, P = (H + 2) * Wp;
  const [xp, active] = padded(x, C, H, W);
  const k = folded(w);
  const Ho = 2 * H, Wo = 2 * W, n = Ho * Wo;
  const acc = scratch("acc", 2 * n, Float64Array);
  const out = new Float32Array(O * n);
  const bd = b.data, nA = active.length;
  for (let o = 0; o < O; o += 2) {
    const pair = o + 1 < O;
    acc.fill(bd[o], 0, n);
    acc.fill(pair ? bd[o + 1] : 0, n, 2 * n);
    for (let a = 0; a < nA; a++) {
      const c = active[a];
      for (let py = 0; py < 2; py++) {
        const kk = ((o * C + c) * 2 + py) * 8;
        const e0 = k[kk], e1 = k[kk + 1], e2 = k[kk + 2], e3 = k[kk + 3];      // even columns
        const d0 = k[kk + 4], d1 = k[kk + 5], d2 = k[kk + 6], d3 = k[kk + 7];  // odd columns
        // The next output channel's folded taps; for an odd last channel, zeros summed
        // into the scratch second half of acc (never stored).
        const kn = pair ? k : EIGHT_ZEROS, m = pair ? kk + C * 16 : 0;
        const f0 = kn[m], f1 = kn[m + 1], f2 = kn[m + 2], f3 = kn[m + 3];
        const g0 = kn[m + 4], g1 = kn[m + 5], g2 = kn[m + 6], g3 = kn[m + 7];
        for (let i = 0; i < H; i++) {
          let r0 = c * P + (i + py) * Wp, r1 = r0 + Wp;
          let u0 = xp[r0], u1 = xp[r0 + 1], v0 = xp[r1], v1 = xp[r1 + 1];
          let q = (2 * i + py) * Wo;
          for (let j = 0; j < W; j++) {
            const u2 = xp[r0 + 2], v2 = xp[r1 + 2];
            acc[q] += e0 * u0 + e1 * u1 + e2 * v0 + e3 * v1;
            acc[q + 1] += d0 * u1 + d1 * u2 + d2 * v1 + d3 * v2;
            acc[q + n] += f0 * u0 + f1 * u1 + f2 * v0 + f3 * v1;
            acc[q + n + 1] += g0 * u1 + g1 * u2 + g2 * v1 + g3 * v2;
            u0 = u1; u1 = u2; v0 = v1; v1 = v2;
            r0++; r1++; q += 2;
          }
        }
      }
    }
    store(acc, out, o * n, pair ? 2 * n : n, relu);
  }
  return [out, [O, Ho, Wo]];
}

// Any square kernel, stride and zero padding (the general case, e.g. the wide model's
// strided convs).
function conv2d(x, shape, w, b, stride, pad, relu = false) {
  const [C, H, W] = shape;
  const [O, Ci, K] = w.shape;
  if (Ci !== C) throw new Error(`conv2d: ${C} input channels, the weight wants ${Ci}`);
  if (K === 3 && stride === 1 && pad === 1) return conv3x3(x, shape, w, b, relu);
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
  if (relu) for (let i = 0; i < out.length; i++) if (out[i] < 0) out[i] = 0;
  return [out, [O, Ho, Wo]];
}

// Four partial sums per row: independent additions, not one long chain.
function linear(x, w, b) {
  const [O, I] = w.shape;
  if (x.length !== I) throw new Error(`linear: ${x.length} inputs, the weight wants ${I}`);
  const out = new Float32Array(O);
  const wd = w.data, I4 = I - (I % 4);
  for (let o = 0; o < O; o++) {
    const r = o * I;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < I4; i += 4) {
      s0 += wd[r + i] * x[i];
      s1 += wd[r + i + 1] * x[i + 1];
      s2 += wd[r + i + 2] * x[i + 2];
      s3 += wd[r + i + 3] * x[i + 3];
    }
    for (let i = I4; i < I; i++) s0 += wd[r + i] * x[i];
    out[o] = (s0 + s1) + (s2 + s3) + b.data[o];
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
      const relu = ops[i + 2] !== undefined && ops[i + 2].op === "relu";  // fused
      [x, shape] = upsample2Conv3x3(x, shape, tensors[next.weight], tensors[next.bias], relu);
      i += relu ? 2 : 1;
      continue;
    }
    switch (op.op) {
      case "conv2d": {
        const relu = next !== undefined && next.op === "relu";  // fused
        [x, shape] = conv2d(x, shape, tensors[op.weight], tensors[op.bias], op.stride, op.padding, relu);
        if (relu) i += 1;
        break;
      }
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

  /**
   * The same z with every label: an array of num_classes images. The decoder's first
   * Linear sees [z ; one-hot(k)], so its output is W[:, :D] z + b (once) plus the
   * column W[:, D + k]; the rest of the program runs per label.
   */
  decodeAll(z) {
    const ops = this.entry.decoder, first = ops[0];
    const D = this.latentDim, n = this.numClasses;
    if (first.op !== "linear") return Array.from({ length: n }, (_, k) => this.decode(z, k));
    const w = this.tensors[first.weight], bias = this.tensors[first.bias].data;
    const [O, I] = w.shape, wd = w.data;
    if (I !== D + n) throw new Error(`decoder: ${I} inputs, expected ${D} + ${n}`);
    const base = new Float64Array(O);
    for (let o = 0; o < O; o++) {
      let s = 0;
      for (let i = 0; i < D; i++) s += wd[o * I + i] * z[i];
      base[o] = s + bias[o];
    }
    const rest = ops.slice(1);
    const out = [];
    for (let k = 0; k < n; k++) {
      const h = new Float32Array(O);
      for (let o = 0; o < O; o++) h[o] = base[o] + wd[o * I + D + k];
      out.push(run(rest, this.tensors, h, [O])[0]);
    }
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
// plane, read from `src` at `offset` with rows `stride` apart (a crop of a larger
// image, not copied): the rows first, then the columns, each pass skipped if its size
// is unchanged. Each output is a float32 sum in input order, as in PyTorch's kernel; a
// sum is a chain of dependent additions, so four outputs (rows, then columns) are
// summed side by side. Returns a new (newH, newW) array.
function resizeAA(src, h, w, newH, newW, stride = w, offset = 0) {
  let cur = src, cs = stride, co = offset;
  if (newW !== w) {
    const ws = aaWeights(w, newW);
    const out = new Float32Array(h * newW);
    const h4 = h - (h % 4);
    for (let x = 0; x < newW; x++) {  // each output column's weights, then every row
      const [x0, wt] = ws[x];
      const nt = wt.length;
      let y = 0;
      for (; y < h4; y += 4) {
        const r0 = co + y * cs + x0, r1 = r0 + cs, r2 = r1 + cs, r3 = r2 + cs;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let j = 0; j < nt; j++) {
          const v = wt[j];
          s0 = f32(s0 + f32(cur[r0 + j] * v));
          s1 = f32(s1 + f32(cur[r1 + j] * v));
          s2 = f32(s2 + f32(cur[r2 + j] * v));
          s3 = f32(s3 + f32(cur[r3 + j] * v));
        }
        out[y * newW + x] = s0;
        out[(y + 1) * newW + x] = s1;
        out[(y + 2) * newW + x] = s2;
        out[(y + 3) * newW + x] = s3;
      }
      for (; y < h; y++) {
        const r0 = co + y * cs + x0;
        let s = 0;
        for (let j = 0; j < nt; j++) s = f32(s + f32(cur[r0 + j] * wt[j]));
        out[y * newW + x] = s;
      }
    }
    cur = out;
    cs = newW;
    co = 0;
  }
  if (newH !== h) {
    const ws = aaWeights(h, newH);
    const out = new Float32Array(newH * newW);
    const w4 = newW - (newW % 4);
    for (let y = 0; y < newH; y++) {
      const [y0, wt] = ws[y];
      const nt = wt.length;
      const base = co + y0 * cs;
      let x = 0;
      for (; x < w4; x += 4) {
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let j = 0; j < nt; j++) {
          const v = wt[j], r = base + j * cs + x;
          s0 = f32(s0 + f32(cur[r] * v));
          s1 = f32(s1 + f32(cur[r + 1] * v));
          s2 = f32(s2 + f32(cur[r + 2] * v));
          s3 = f32(s3 + f32(cur[r + 3] * v));
        }
        out[y * newW + x] = s0;
        out[y * newW + x + 1] = s1;
        out[y * newW + x + 2] = s2;
        out[y * newW + x + 3] = s3;
      }
      for (; x < newW; x++) {
        let s = 0;
        for (let j = 0; j < nt; j++) s = f32(s + f32(cur[base + j * cs + x] * wt[j]));
        out[y * newW + x] = s;
      }
    }
    cur = out;
  }
  if (cur === src) {  // neither pass ran: a copy of the crop
    cur = new Float32Array(h * w);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) cur[y * w + x] = src[offset + y * stride + x];
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
  const n = H * W, n4 = n - (n % 4);
  let m0 = 0, m1 = 0, m2 = 0, m3 = 0;  // four running maxima: no one long dependency chain
  for (let i = 0; i < n4; i += 4) {
    const a = pixels[i], b = pixels[i + 1], c = pixels[i + 2], d = pixels[i + 3];
    if (a > m0) m0 = a;
    if (b > m1) m1 = b;
    if (c > m2) m2 = c;
    if (d > m3) m3 = d;
  }
  for (let i = n4; i < n; i++) if (pixels[i] > m0) m0 = pixels[i];
  const max = Math.max(m0, m1, m2, m3);
  if (max < 0.5 / 255) return null;
  const level = f32(inkLevel * max);
  let top = H, bottom = -1, left = W, right = -1;
  for (let y = 0; y < H; y++) {  // each row: its first ink pixel from the left, then from the right
    const row = y * W;
    let x = 0;
    while (x < W && !(pixels[row + x] >= level)) x++;
    if (x === W) continue;
    if (top === H) top = y;
    bottom = y;
    if (x < left) left = x;
    let r = W - 1;
    while (!(pixels[row + r] >= level)) r--;
    if (r > right) right = r;
  }
  const h = bottom + 1 - top, w = right + 1 - left;
  const scale = box / Math.max(h, w);
  const newH = Math.max(1, roundHalfEven(h * scale));
  const newW = Math.max(1, roundHalfEven(w * scale));
  const small = resizeAA(pixels, h, w, newH, newW, W, top * W + left);  // the ink's box
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
