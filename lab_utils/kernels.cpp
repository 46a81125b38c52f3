// Hand-written CPU kernels for the lab CVAE's narrow convolution stacks.
//
// Compiled on first use by lab_utils/kernels.py (g++ -O3 -march=native -fopenmp)
// and called through ctypes; lab_utils/fast.py uses them when they load and
// falls back to its PyTorch route when they do not. Read kernels.py first: it
// says what each function computes and which PyTorch ops it replaces.
//
// Why hand-written: the convolutions have 1 to 11 channels, too few for a
// library kernel to keep a CPU's vector units busy. Here the vector runs along
// the batch instead: 16 images side by side (one "lane" each), so every
// multiply-add handles 16 images at once whatever the channel count.
//
// Layout of every activation: [chunk][channel][H + 2][W + 2][16 lanes], a chunk
// being 16 images of the batch, with a one-pixel zero border (the convolutions'
// padding=1) so that no loop tests bounds. Lanes past the batch's end hold
// zeros on input and get zero gradient, so they never reach a weight gradient.
//
// Sums: every weight gradient is summed per chunk, then over chunks in chunk
// order, so the result does not depend on the number of threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int L = 16;  // images per chunk: the vector length
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));

inline vf ld(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void st(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float a) { return vf{} + a; }
inline vf relu(vf v) { return v > 0 ? v : 0; }
inline float hsum(vf v) { float s = 0; for (int l = 0; l < L; ++l) s += v[l]; return s; }

// Floats of one padded channel plane of an H x W map.
constexpr long plane(int h, int w) { return long(h + 2) * (w + 2) * L; }
// Offset of pixel (i, j) of channel c in padded coordinates (i, j in 0 .. H + 1).
template <int H, int W> inline long at(int c, int i, int j) { return ((long(c) * (H + 2) + i) * (W + 2) + j) * L; }

// Zero the one-pixel border of C padded planes (the interior is written after).
template <int C, int H, int W> void zero_border(float* buf) {
  for (int c = 0; c < C; ++c) {
    std::memset(buf + at<H, W>(c, 0, 0), 0, sizeof(float) * (W + 2) * L);
    std::memset(buf + at<H, W>(c, H + 1, 0), 0, sizeof(float) * (W + 2) * L);
    for (int i = 1; i <= H; ++i) {
      std::memset(buf + at<H, W>(c, i, 0), 0, sizeof(float) * L);
      std::memset(buf + at<H, W>(c, i, W + 1), 0, sizeof(float) * L);
    }
  }
}

// How many neighbouring pixels of a row one pass computes: a multiply-add waits
// about 4 cycles for the one before it on the same accumulator, so a pass keeps
// 7 to 16 independent accumulators (channels x pixels) in flight.
constexpr int block(int channels, int width) {
  return channels >= 8 ? 1 : (channels <= 2 && width % 7 == 0) ? 7 : (width % 4 == 0) ? 4 : (width % 2 == 0) ? 2 : 1;
}

// out = conv3x3(in, w) + bias, optionally ReLU: in [C][H+2][W+2], w [O][C][3][3],
// out's interior [O][H][W] (its border is left as it is).
template <int C, int O, int H, int W>
void conv_forward(const float* in, const float* w, const float* bias, float* out, bool apply_relu) {
  constexpr int J = block(O, W);
  for (int i = 0; i < H; ++i)
    for (int j = 0; j < W; j += J) {
      vf acc[O][J];
      for (int o = 0; o < O; ++o)
        for (int u = 0; u < J; ++u) acc[o][u] = splat(bias[o]);
      for (int c = 0; c < C; ++c)
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx)
            for (int u = 0; u < J; ++u) {
              const vf v = ld(in + at<H, W>(c, i + dy, j + u + dx));
              for (int o = 0; o < O; ++o) acc[o][u] += w[(o * C + c) * 9 + dy * 3 + dx] * v;
            }
      for (int o = 0; o < O; ++o)
        for (int u = 0; u < J; ++u)
          st(out + at<H, W>(o, i + 1, j + u + 1), apply_relu ? relu(acc[o][u]) : acc[o][u]);
    }
}

// The gradient of conv_forward's input: din = conv_transpose(dout, w), then
// zeroed where the input's activation was not positive (the ReLU that made it),
// when act is given. dout [O][H+2][W+2] with a zero border; din's interior [C][H][W].
template <int C, int O, int H, int W>
void conv_input_grad(const float* dout, const float* w, const float* act, float* din) {
  constexpr int J = block(C, W);
  for (int r = 0; r < H; ++r)
    for (int s = 0; s < W; s += J) {
      vf acc[C][J] = {};
      for (int o = 0; o < O; ++o)
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx)
            for (int u = 0; u < J; ++u) {
              // output (r + 1 - dy, s + u + 1 - dx) read input (r, s + u) through tap (dy, dx)
              const vf d = ld(dout + at<H, W>(o, r + 2 - dy, s + u + 2 - dx));
              for (int c = 0; c < C; ++c) acc[c][u] += w[(o * C + c) * 9 + dy * 3 + dx] * d;
            }
      for (int c = 0; c < C; ++c)
        for (int u = 0; u < J; ++u) {
          const long k = at<H, W>(c, r + 1, s + u + 1);
          st(din + k, act ? (ld(act + k) > 0 ? acc[c][u] : 0) : acc[c][u]);
        }
    }
}

// The gradients of conv_forward's weight and bias, added to dw [O][C][3][3] and db [O]:
// dw[o][c][dy][dx] = sum over pixels and lanes of dout[o](i, j) in[c](i + dy - 1, j + dx - 1).
template <int C, int O, int H, int W>
void conv_weight_grad(const float* dout, const float* in, float* dw, float* db) {
  for (int o = 0; o < O; ++o) {
    vf bias_acc = {};
    for (int c = 0; c < C; ++c) {
      vf acc[9] = {};
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < W; ++j) {
          const vf d = ld(dout + at<H, W>(o, i + 1, j + 1));
          if (c == 0) bias_acc += d;
          for (int dy = 0; dy < 3; ++dy)
            for (int dx = 0; dx < 3; ++dx) acc[dy * 3 + dx] += d * ld(in + at<H, W>(c, i + dy, j + dx));
        }
      for (int t = 0; t < 9; ++t) dw[(o * C + c) * 9 + t] += hsum(acc[t]);
    }
    db[o] += hsum(bias_acc);
  }
}

// Nearest 2x upsampling followed by a 3x3 convolution, without building the
// upsampled map. Output pixel (2p + a, 2q + b) (phase a, b in {0, 1}) reads the
// upsampled rows 2p + a - 1 .. 2p + a + 1, which are only two rows of the small
// map: p - 1 and p for a = 0 (taps dy = 0 | 1, 2), p and p + 1 for a = 1 (taps
// 0, 1 | 2); the same for columns. So each phase is a 2x2 convolution of the
// small map whose taps are sums of the 3x3 taps ("folded"): 4 multiply-adds per
// output pixel and input channel instead of 9 (16 instead of 36 for the 4 output
// pixels of one small pixel).
// FOLD[a][u]: the taps dy that land on small row p + a + u - 1, as bits.
constexpr int FOLD[2][2] = {{0b001, 0b110}, {0b011, 0b100}};

// Folded kernels wf[a][b][o][c][u][v] (index ((((a*2 + b)*O + o)*C + c)*4 + u*2 + v)).
template <int C, int O> void fold(const float* w, float* wf) {
  for (int a = 0; a < 2; ++a) for (int b = 0; b < 2; ++b)
    for (int o = 0; o < O; ++o) for (int c = 0; c < C; ++c)
      for (int u = 0; u < 2; ++u) for (int v = 0; v < 2; ++v) {
        float s = 0;
        for (int dy = 0; dy < 3; ++dy) for (int dx = 0; dx < 3; ++dx)
          if ((FOLD[a][u] >> dy & 1) && (FOLD[b][v] >> dx & 1)) s += w[(o * C + c) * 9 + dy * 3 + dx];
        wf[((((a * 2 + b) * O + o) * C + c) * 4) + u * 2 + v] = s;
      }
}

// The folded kernels' gradient, back onto the 3x3 taps: added to dw [O][C][3][3].
template <int C, int O> void unfold_grad(const float* dwf, float* dw) {
  for (int a = 0; a < 2; ++a) for (int b = 0; b < 2; ++b)
    for (int o = 0; o < O; ++o) for (int c = 0; c < C; ++c)
      for (int u = 0; u < 2; ++u) for (int v = 0; v < 2; ++v)
        for (int dy = 0; dy < 3; ++dy) for (int dx = 0; dx < 3; ++dx)
          if ((FOLD[a][u] >> dy & 1) && (FOLD[b][v] >> dx & 1))
            dw[(o * C + c) * 9 + dy * 3 + dx] += dwf[((((a * 2 + b) * O + o) * C + c) * 4) + u * 2 + v];
}

// out = conv3x3(upsample2(in), w) + bias, ReLU: in [C][H+2][W+2] (small, padded),
// wf folded (fold<C, O>), out's interior [O][2H][2W].
template <int C, int O, int H, int W>
void upconv_forward(const float* in, const float* wf, const float* bias, float* out) {
  for (int p = 0; p < H; ++p)
    for (int q = 0; q < W; ++q) {
      vf acc[4][O];
      for (int ph = 0; ph < 4; ++ph)
        for (int o = 0; o < O; ++o) acc[ph][o] = splat(bias[o]);
      for (int c = 0; c < C; ++c) {
        vf nb[3][3];  // the small map around (p, q): padded rows p .. p + 2
        for (int y = 0; y < 3; ++y)
          for (int x = 0; x < 3; ++x) nb[y][x] = ld(in + at<H, W>(c, p + y, q + x));
        for (int a = 0; a < 2; ++a) for (int b = 0; b < 2; ++b)
          for (int o = 0; o < O; ++o) {
            const float* k = wf + (((a * 2 + b) * O + o) * C + c) * 4;
            acc[a * 2 + b][o] += k[0] * nb[a][b] + k[1] * nb[a][b + 1] + k[2] * nb[a + 1][b] + k[3] * nb[a + 1][b + 1];
          }
      }
      for (int a = 0; a < 2; ++a) for (int b = 0; b < 2; ++b)
        for (int o = 0; o < O; ++o)
          st(out + at<2 * H, 2 * W>(o, 2 * p + a + 1, 2 * q + b + 1), relu(acc[a * 2 + b][o]));
    }
}

// Its weight gradient: dwf[a][b][o][c][u][v] = sum of dout[o](2p + a, 2q + b) in[c](p + a + u - 1, q + b + v - 1),
// then unfolded onto dw; and its bias gradient db [O]. dout: [O][2H+2][2W+2] padded.
template <int C, int O, int H, int W>
void upconv_weight_grad(const float* dout, const float* in, float* dw, float* db) {
  float dwf[4 * O * C * 4];
  for (int o = 0; o < O; ++o) {
    vf bias_acc = {};
    for (int c = 0; c < C; ++c) {
      vf acc[4][4] = {};
      for (int p = 0; p < H; ++p)
        for (int q = 0; q < W; ++q) {
          vf nb[3][3];
          for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 3; ++x) nb[y][x] = ld(in + at<H, W>(c, p + y, q + x));
          for (int a = 0; a < 2; ++a) for (int b = 0; b < 2; ++b) {
            const vf d = ld(dout + at<2 * H, 2 * W>(o, 2 * p + a + 1, 2 * q + b + 1));
            if (c == 0) bias_acc += d;
            for (int u = 0; u < 2; ++u) for (int v = 0; v < 2; ++v) acc[a * 2 + b][u * 2 + v] += d * nb[a + u][b + v];
          }
        }
      for (int ph = 0; ph < 4; ++ph)
        for (int t = 0; t < 4; ++t) dwf[((ph * O + o) * C + c) * 4 + t] = hsum(acc[ph][t]);
    }
    db[o] += hsum(bias_acc);
  }
  unfold_grad<C, O>(dwf, dw);
}

// Its input gradient, zeroed where the input's activation act was not positive:
// din's interior [C][H][W]. Small pixel (P, Q) fed output (2p + a, 2q + b) through
// folded tap (u, v) when p = P - a - u + 1 (padded P; the zero border covers the rest).
template <int C, int O, int H, int W>
void upconv_input_grad(const float* dout, const float* wf, const float* act, float* din) {
  for (int P = 1; P <= H; ++P)
    for (int Q = 1; Q <= W; ++Q) {
      vf acc[C] = {};
      for (int o = 0; o < O; ++o)
        for (int a = 0; a < 2; ++a) for (int b = 0; b < 2; ++b)
          for (int u = 0; u < 2; ++u) for (int v = 0; v < 2; ++v) {
            const vf d = ld(dout + at<2 * H, 2 * W>(o, 2 * (P - a - u) + a + 1, 2 * (Q - b - v) + b + 1));
            for (int c = 0; c < C; ++c) acc[c] += wf[((((a * 2 + b) * O + o) * C + c) * 4) + u * 2 + v] * d;
          }
      for (int c = 0; c < C; ++c) {
        const long k = at<H, W>(c, P, Q);
        st(din + k, ld(act + k) > 0 ? acc[c] : 0);
      }
    }
}

// Rows of a (B, C*H*W) matrix, as the lanes of chunk `chunk` of C padded planes:
// dst[c](i, j)[lane] = src[b][(c*H + i)*W + j], zero for lanes past the batch.
template <int C, int H, int W> void gather_lanes(const float* src, int batch, int chunk, float* dst) {
  for (int l = 0; l < L; ++l) {
    const int b = chunk * L + l;
    const float* row = src + long(b) * C * H * W;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < W; ++j) dst[at<H, W>(c, i + 1, j + 1) + l] = b < batch ? row[(c * H + i) * W + j] : 0.0f;
  }
}
// The reverse: the lanes of a chunk back into the rows of a (B, C*H*W) matrix.
template <int C, int H, int W> void scatter_lanes(const float* src, int batch, int chunk, float* dst) {
  for (int l = 0; l < L && chunk * L + l < batch; ++l) {
    float* row = dst + long(chunk * L + l) * C * H * W;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < W; ++j) row[(c * H + i) * W + j] = src[at<H, W>(c, i + 1, j + 1) + l];
  }
}

// total[k] = sum over chunks of partial[chunk][k], in chunk order (so the same for
// any number of threads); the output arrays take consecutive runs of k. A few
// hundred sums at most (the weight gradients): one thread does them.
inline void sum_chunks(const float* partial, int chunks, long count, float* const* outs, const long* sizes) {
  long offset = 0;
  for (int t = 0; outs[t]; offset += sizes[t], ++t) {
    float* out = outs[t];
    const long size = sizes[t], start = offset;
    for (long k = 0; k < size; ++k) {
      float s = 0;
      for (int n = 0; n < chunks; ++n) s += partial[n * count + start + k];
      out[k] = s;
    }
  }
}

// ---- exp and log, 16 lanes at a time (Cephes' polynomials, about 1 ulp) ----

inline vf scale_pow2(vf v, vi n) {  // v * 2^n for n in [-150, 128], in two exact steps
  n = n < -150 ? -150 : n;
  n = n > 128 ? 128 : n;
  const vi half = n / 2, rest = n - half;
  v *= (vf)((half + 127) << 23);
  return v * (vf)((rest + 127) << 23);
}

inline vf exp_v(vf x) {
  const vf xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);  // keeps n in int range
  const vf fx = xc * 1.44269504088896341f + 0.5f;
  vi n = __builtin_convertvector(fx, vi);         // rounds toward zero; then floor:
  n += __builtin_convertvector(n, vf) > fx;        // a true comparison is -1
  const vf fn = __builtin_convertvector(n, vf);
  vf r = xc - fn * 0.693359375f;
  r -= fn * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vf y = scale_pow2(p, n);
  y = x > 88.7228394f ? __builtin_inff() : y;  // overflow
  y = x < -103.9f ? 0.0f : y;                   // underflow
  return x != x ? x : y;                         // NaN stays NaN
}

// log(x) for x >= 0, with -100 where the result would be below it: torch's
// binary_cross_entropy clamps each log at -100 (so log(0) = -inf becomes -100).
inline vf log_clamped(vf x) {
  const vi tiny = x < 1.17549435e-38f;  // subnormal: scale into the normal range first
  x = tiny ? x * 8388608.0f : x;
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 126;
  vf m = (vf)((bits & ~0x7f800000) | 0x3f000000);  // mantissa in [0.5, 1)
  e += tiny ? -23 : 0;
  const vi small = m < 0.707106781186547524f;
  e -= small ? 1 : 0;
  m = small ? m + m - 1.0f : m - 1.0f;
  const vf z = m * m;
  vf p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const vf fe = __builtin_convertvector(e, vf);
  vf y = p * m * z + fe * -2.12194440e-4f - 0.5f * z;
  y = m + y + fe * 0.693359375f;
  y = x == 0 ? -100.0f : y;
  y = y < -100.0f ? -100.0f : y;
  return x != x ? x : y;  // NaN stays NaN (a model whose weights went NaN must not look finite)
}

// ---- the lab model's two convolution stacks ----
// Encoder: image (1, 28, 28) -> conv 1->3 (+ the label's bias map) ReLU -> conv 3->1 ReLU.
// Decoder: (2, 14, 14) -> conv 2->11 ReLU -> upsample x2 -> conv 11->3 ReLU -> conv 3->1
//          -> sigmoid -> binary cross-entropy against the image, summed per image.
constexpr int S = 28, S0 = 14, K = 10;
constexpr long P28 = plane(S, S), P14 = plane(S0, S0);
constexpr int ENC_W1 = 3 * 1 * 9, ENC_W2 = 1 * 3 * 9;
constexpr int DEC_WA = 11 * 2 * 9, DEC_WB = 3 * 11 * 9, DEC_WC = 1 * 3 * 9;

// Interior pixel k = i * 28 + j of a padded 28 x 28 plane.
inline long pad28(int k) { return at<S, S>(0, k / S + 1, k % S + 1); }

}  // namespace

extern "C" {

// Floats per chunk of each buffer, so that Python allocates them: the encoder's
// and the decoder's saved activations and backward scratch.
long cvae_enc_saved_floats() { return 5 * P28; }        // x, h1 (3), h2
long cvae_enc_scratch_floats() { return 4 * P28; }      // dpre2, dpre1 (3)
long cvae_dec_saved_floats() { return 13 * P14 + 4 * P28; }  // h0 (2), g1 (11), g2 (3), p
long cvae_dec_scratch_floats() { return 13 * P14 + 5 * P28; }  // dh0 (2), da (11), db (3), dl, x

// The label channels of the encoder's first convolution. Class k's input has
// channel 1 + k all ones and the other label channels zero, so by linearity its
// contribution at (i, j) is the sum of the taps w1[c][1 + k][dy][dx] that land
// inside the image (the zero padding drops the others): a per-class bias map,
// constant inside, different on the border rows and columns. Pixel classes:
// 0 = first row (or column), 1 = inside, 2 = last. labelmap[k][c][row][col].
constexpr int pixel_class(int i) { return i == 0 ? 0 : (i == S - 1 ? 2 : 1); }
// Whether tap d (0, 1, 2) of a 3x3 kernel lands inside the image at a pixel of class r.
constexpr bool tap_inside(int r, int d) { return !(r == 0 && d == 0) && !(r == 2 && d == 2); }

void label_maps(const float* w1, int in_channels, float* labelmap /* [K][3][3][3] */) {
  for (int k = 0; k < K; ++k)
    for (int c = 0; c < 3; ++c)
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q) {
          float s = 0;
          for (int dy = 0; dy < 3; ++dy)
            for (int dx = 0; dx < 3; ++dx)
              if (tap_inside(r, dy) && tap_inside(q, dx)) s += w1[((c * in_channels) + 1 + k) * 9 + dy * 3 + dx];
          labelmap[((k * 3 + c) * 3 + r) * 3 + q] = s;
        }
}

// Encoder forward. x (B, 784), y (B,) int64 class; w1 (3, in_channels, 3, 3) the
// first convolution's whole kernel: channel 0 for the image and, when
// in_channels is 11, channels 1 .. 10 for the one-hot label maps (1: a model
// without labels; y is then not read); b1 (3), w2 (1, 3, 3, 3), b2 (1). Writes
// h2 (B, 784) and the saved activations (saved: chunks x cvae_enc_saved_floats()).
void cvae_enc_forward(int batch, const float* x, const int64_t* y, int in_channels,
                      const float* w1, const float* b1, const float* w2, const float* b2,
                      float* saved, float* h2_out, int threads) {
  const int chunks = (batch + L - 1) / L;
  float w1_image[ENC_W1];  // the image channel's kernel, (3, 1, 3, 3)
  for (int c = 0; c < 3; ++c)
    for (int t = 0; t < 9; ++t) w1_image[c * 9 + t] = w1[c * in_channels * 9 + t];
  float labelmap[K * 27] = {};
  if (in_channels > 1) label_maps(w1, in_channels, labelmap);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int n = 0; n < chunks; ++n) {
    float* xp = saved + n * cvae_enc_saved_floats();
    float* h1 = xp + P28;
    float* h2 = h1 + 3 * P28;
    zero_border<1, S, S>(xp);
    zero_border<3, S, S>(h1);
    zero_border<1, S, S>(h2);
    gather_lanes<1, S, S>(x, batch, n, xp);
    conv_forward<1, 3, S, S>(xp, w1_image, b1, h1, false);
    if (in_channels > 1) {
      vf lane_map[3][3][3];  // each lane's class's map value, by channel and pixel class
      for (int c = 0; c < 3; ++c)
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q)
            for (int l = 0; l < L; ++l) {
              const int b = n * L + l;
              lane_map[c][r][q][l] = b < batch ? labelmap[((y[b] * 3 + c) * 3 + r) * 3 + q] : 0.0f;
            }
      for (int c = 0; c < 3; ++c)
        for (int i = 0; i < S; ++i)
          for (int j = 0; j < S; ++j) {
            const long o = at<S, S>(c, i + 1, j + 1);
            st(h1 + o, ld(h1 + o) + lane_map[c][pixel_class(i)][pixel_class(j)]);
          }
    }
    for (int c = 0; c < 3; ++c)  // the ReLU
      for (int i = 1; i <= S; ++i)
        for (int j = 1; j <= S; ++j) st(h1 + at<S, S>(c, i, j), relu(ld(h1 + at<S, S>(c, i, j))));
    conv_forward<3, 1, S, S>(h1, w2, b2, h2, true);
    scatter_lanes<1, S, S>(h2, batch, n, h2_out);
  }
}

// Encoder backward, from dh2 (B, 784). Writes dw1 (3, in_channels, 3, 3), db1, dw2, db2.
// partial: chunks x (27 in_channels + 31) floats of per-chunk sums.
void cvae_enc_backward(int batch, const float* dh2, const int64_t* y, int in_channels, const float* w2,
                       const float* saved, float* scratch, float* partial,
                       float* dw1, float* db1, float* dw2, float* db2, int threads) {
  const int chunks = (batch + L - 1) / L;
  const long NW1 = 27L * in_channels, NP = NW1 + 3 + ENC_W2 + 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int n = 0; n < chunks; ++n) {
    const float* xp = saved + n * cvae_enc_saved_floats();
    const float* h1 = xp + P28;
    const float* h2 = h1 + 3 * P28;
    float* d2 = scratch + n * cvae_enc_scratch_floats();
    float* d1 = d2 + P28;
    float* part = partial + n * NP;
    std::memset(part, 0, sizeof(float) * NP);
    zero_border<1, S, S>(d2);
    zero_border<3, S, S>(d1);
    gather_lanes<1, S, S>(dh2, batch, n, d2);
    for (int k = 0; k < S * S; ++k) {  // through the last ReLU
      const long o = pad28(k);
      st(d2 + o, ld(h2 + o) > 0 ? ld(d2 + o) : 0);
    }
    conv_weight_grad<3, 1, S, S>(d2, h1, part + NW1 + 3, part + NW1 + 3 + ENC_W2);
    conv_input_grad<3, 1, S, S>(d2, w2, h1, d1);
    float dw1_image[ENC_W1] = {};
    conv_weight_grad<1, 3, S, S>(d1, xp, dw1_image, part + NW1);
    for (int c = 0; c < 3; ++c)
      for (int t = 0; t < 9; ++t) part[c * in_channels * 9 + t] = dw1_image[c * 9 + t];
    if (in_channels == 1) continue;
    // The label taps: tap (dy, dx) of class k's channel reached every pixel where it
    // lands inside the image, so its gradient is the sum of d1 over those pixels:
    // the whole map less the first or last row and column that it misses.
    for (int c = 0; c < 3; ++c) {
      vf total = {}, row[2] = {}, col[2] = {}, corner[2][2];
      for (int i = 0; i < S; ++i)
        for (int j = 0; j < S; ++j) {
          const vf d = ld(d1 + at<S, S>(c, i + 1, j + 1));
          total += d;
          if (i == 0) row[0] += d;
          if (i == S - 1) row[1] += d;
          if (j == 0) col[0] += d;
          if (j == S - 1) col[1] += d;
        }
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) corner[a][b] = ld(d1 + at<S, S>(c, a ? S : 1, b ? S : 1));
      for (int dy = 0; dy < 3; ++dy)
        for (int dx = 0; dx < 3; ++dx) {
          vf tap = total;  // dy = 0 misses the first row, dy = 2 the last; the same for dx
          if (dy != 1) tap -= row[dy / 2];
          if (dx != 1) tap -= col[dx / 2];
          if (dy != 1 && dx != 1) tap += corner[dy / 2][dx / 2];  // subtracted twice
          for (int l = 0; l < L && n * L + l < batch; ++l)
            part[(c * in_channels + 1 + y[n * L + l]) * 9 + dy * 3 + dx] += tap[l];
        }
    }
  }
  float* const outs[] = {dw1, db1, dw2, db2, nullptr};
  const long sizes[] = {NW1, 3, ENC_W2, 1};
  sum_chunks(partial, chunks, NP, outs, sizes);
}

// Decoder forward and loss. h0 (B, 392) = the (2, 14, 14) start maps (after the
// Linear and its ReLU), x (B, 784) the images; wa (11, 2, 3, 3), ba, wb (3, 11, 3, 3),
// bb, wc (1, 3, 3, 3), bc. Writes bce (B,): each image's binary cross-entropy
// summed over pixels, as torch's binary_cross_entropy computes it (logs clamped at -100).
void cvae_dec_forward(int batch, const float* h0, const float* x,
                      const float* wa, const float* ba, const float* wb, const float* bb,
                      const float* wc, const float* bc, float* saved, float* scratch,
                      float* bce, int threads) {
  const int chunks = (batch + L - 1) / L;
  float wbf[16 * DEC_WB / 9];
  fold<11, 3>(wb, wbf);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int n = 0; n < chunks; ++n) {
    float* hp = saved + n * cvae_dec_saved_floats();
    float* g1 = hp + 2 * P14;
    float* g2 = g1 + 11 * P14;
    float* p = g2 + 3 * P28;
    float* xp = scratch + n * cvae_dec_scratch_floats() + 13 * P14 + 4 * P28;  // the image, kept for backward
    zero_border<2, S0, S0>(hp);
    zero_border<11, S0, S0>(g1);
    zero_border<3, S, S>(g2);
    zero_border<1, S, S>(p);
    gather_lanes<2, S0, S0>(h0, batch, n, hp);
    gather_lanes<1, S, S>(x, batch, n, xp);
    conv_forward<2, 11, S0, S0>(hp, wa, ba, g1, true);
    upconv_forward<11, 3, S0, S0>(g1, wbf, bb, g2);
    conv_forward<3, 1, S, S>(g2, wc, bc, p, false);  // logits, then:
    vf total = {};
    for (int k = 0; k < S * S; ++k) {
      const long o = pad28(k);
      const vf prob = 1.0f / (1.0f + exp_v(-ld(p + o)));
      const vf t = ld(xp + o);
      // (t - 1) max(log(1 - p), -100) - t max(log p, -100), as torch computes it
      total += (t - 1.0f) * log_clamped(1.0f - prob) - t * log_clamped(prob);
      st(p + o, prob);
    }
    for (int l = 0; l < L; ++l)
      if (n * L + l < batch) bce[n * L + l] = total[l];
  }
}

// Decoder backward, from dbce (B,). Writes dh0 (B, 392) and the six parameter gradients.
// The images are read from the scratch the forward pass filled.
void cvae_dec_backward(int batch, const float* dbce,
                       const float* wa, const float* wb, const float* wc,
                       const float* saved, float* scratch, float* partial, float* dh0,
                       float* dwa, float* dba, float* dwb, float* dbb, float* dwc, float* dbc,
                       int threads) {
  const int chunks = (batch + L - 1) / L;
  constexpr long NP = DEC_WA + 11 + DEC_WB + 3 + DEC_WC + 1;
  float wbf[16 * DEC_WB / 9];
  fold<11, 3>(wb, wbf);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int n = 0; n < chunks; ++n) {
    const float* hp = saved + n * cvae_dec_saved_floats();
    const float* g1 = hp + 2 * P14;
    const float* g2 = g1 + 11 * P14;
    const float* p = g2 + 3 * P28;
    float* dh = scratch + n * cvae_dec_scratch_floats();  // (2, 14, 14)
    float* da = dh + 2 * P14;                            // (11, 14, 14)
    float* db = da + 11 * P14;                           // (3, 28, 28)
    float* dl = db + 3 * P28;                            // (1, 28, 28)
    const float* xp = dl + P28;                          // the image, from the forward pass
    float* part = partial + n * NP;
    std::memset(part, 0, sizeof(float) * NP);
    zero_border<1, S, S>(dl);
    zero_border<3, S, S>(db);
    vf g;
    for (int l = 0; l < L; ++l) g[l] = n * L + l < batch ? dbce[n * L + l] : 0.0f;
    for (int k = 0; k < S * S; ++k) {
      // torch's binary_cross_entropy backward, then the sigmoid's:
      // g (p - t) / max(p (1 - p), 1e-12), times (1 - p) p
      const long o = pad28(k);
      const vf prob = ld(p + o), t = ld(xp + o), q = (1.0f - prob) * prob;
      st(dl + o, g * (prob - t) / (q > 1e-12f ? q : 1e-12f) * (1.0f - prob) * prob);
    }
    float* gwa = part; float* gba = gwa + DEC_WA; float* gwb = gba + 11;
    float* gbb = gwb + DEC_WB; float* gwc = gbb + 3; float* gbc = gwc + DEC_WC;
    conv_weight_grad<3, 1, S, S>(dl, g2, gwc, gbc);
    conv_input_grad<3, 1, S, S>(dl, wc, g2, db);
    upconv_weight_grad<11, 3, S0, S0>(db, g1, gwb, gbb);
    zero_border<11, S0, S0>(da);
    upconv_input_grad<11, 3, S0, S0>(db, wbf, g1, da);
    conv_weight_grad<2, 11, S0, S0>(da, hp, gwa, gba);
    conv_input_grad<2, 11, S0, S0>(da, wa, nullptr, dh);
    scatter_lanes<2, S0, S0>(dh, batch, n, dh0);
  }
  float* const outs[] = {dwa, dba, dwb, dbb, dwc, dbc, nullptr};
  const long sizes[] = {DEC_WA, 11, DEC_WB, 3, DEC_WC, 1};
  sum_chunks(partial, chunks, NP, outs, sizes);
}

}  // extern "C"
