// Winograd F(4x4, 3x3) causal 3D convolution (3x3x3 kernel, stride 1) for float32 on CPU.
//
// out[b, o, t, y, x] = bias[o] + sum_{c, k, i, j} w[o, c, k, i, j] * xt[b, c, t + k, y + i - 1, x + j - 1]
//
// xt is already padded in time (causal: T + 2 frames); the spatial padding of 1 (zeros or
// replicate) is applied here. Each 4x4 output tile of a frame costs 36 products per (o, c, k)
// instead of 144: the 3x3 spatial kernels are transformed once (U = G g G^T, 6x6), each 6x6 input
// patch is transformed (V = B^T d B), the 36 elementwise products summed over (c, k) are 36
// matrix products, and the output transform (A^T M A) gives the 4x4 tile.
//
// Layouts: U (36, Co, 3 * C) with K index = k * C + c for time tap k. The transformed frames live in
// a ring (36, 5, C, P): frame f goes into slot f % 3, and slots 0 and 1 are mirrored into slots 3
// and 4, so the frames t, t + 1, t + 2 of output frame t are always the three consecutive slots
// t % 3 .. t % 3 + 2, in tap order: for each of the 36 points a (3C, P) matrix with unit stride,
// fed to the batched product without a copy.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <vector>
#include <algorithm>

namespace {

// B^T d for six rows d0..d5 (each a vector of length n), into six outputs.
inline void bt6(const float* d0, const float* d1, const float* d2, const float* d3, const float* d4,
                const float* d5, float* v0, float* v1, float* v2, float* v3, float* v4, float* v5,
                int64_t n) {
#pragma omp simd
  for (int64_t m = 0; m < n; ++m) {
    const float a0 = d0[m], a1 = d1[m], a2 = d2[m], a3 = d3[m], a4 = d4[m], a5 = d5[m];
    v0[m] = 4.f * a0 - 5.f * a2 + a4;
    v1[m] = -4.f * (a1 + a2) + a3 + a4;
    v2[m] = 4.f * (a1 - a2) - a3 + a4;
    v3[m] = -2.f * a1 - a2 + 2.f * a3 + a4;
    v4[m] = 2.f * a1 - a2 - 2.f * a3 + a4;
    v5[m] = 4.f * a1 - 5.f * a3 + a5;
  }
}

// Input transform of one (H, W) plane into the 36 planes dst[j * stride_j + p], p = ty * nw + tx.
void transform_plane(const float* src, int64_t H, int64_t W, int64_t nh, int64_t nw, bool replicate,
                     float* dst, int64_t stride_j) {
  const int64_t L = nw + 1;            // phase-array length
  std::vector<float> ph(6 * 4 * L);    // ph[r][q][m] = padded row r, padded column 4m + q
  std::vector<float> e(6 * 4 * L);     // e[i][q][m]: after the vertical transform
  for (int64_t ty = 0; ty < nh; ++ty) {
    for (int64_t r = 0; r < 6; ++r) {
      int64_t iy = 4 * ty - 1 + r;
      float* out = &ph[r * 4 * L];
      if (iy < 0 || iy >= H) {
        if (!replicate) { std::fill(out, out + 4 * L, 0.f); continue; }
        iy = std::min<int64_t>(std::max<int64_t>(iy, 0), H - 1);
      }
      const float* row = src + iy * W;
      for (int64_t q = 0; q < 4; ++q) {
        float* o = out + q * L;
        for (int64_t m = 0; m < L; ++m) {
          int64_t ix = 4 * m + q - 1;
          if (ix >= 0 && ix < W) o[m] = row[ix];
          else o[m] = replicate ? row[std::min<int64_t>(std::max<int64_t>(ix, 0), W - 1)] : 0.f;
        }
      }
    }
    // vertical: e[i] = sum_r BT[i][r] ph[r], all phases at once (rows are 4L long)
    const int64_t n = 4 * L;
    bt6(&ph[0 * n], &ph[1 * n], &ph[2 * n], &ph[3 * n], &ph[4 * n], &ph[5 * n],
        &e[0 * n], &e[1 * n], &e[2 * n], &e[3 * n], &e[4 * n], &e[5 * n], n);
    // horizontal: column s of tile tx is phase s % 4 at index tx + s / 4
    for (int64_t i = 0; i < 6; ++i) {
      const float* ei = &e[i * n];
      const float* c0 = ei + 0 * L;
      const float* c1 = ei + 1 * L;
      const float* c2 = ei + 2 * L;
      const float* c3 = ei + 3 * L;
      const float* c4 = ei + 0 * L + 1;
      const float* c5 = ei + 1 * L + 1;
      float* base = dst + (i * 6) * stride_j + ty * nw;
      bt6(c0, c1, c2, c3, c4, c5, base, base + stride_j, base + 2 * stride_j, base + 3 * stride_j,
          base + 4 * stride_j, base + 5 * stride_j, nw);
    }
  }
}

// A^T m for six rows into four outputs.
inline void at4(const float* m0, const float* m1, const float* m2, const float* m3, const float* m4,
                const float* m5, float* y0, float* y1, float* y2, float* y3, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const float a1 = m1[k], a2 = m2[k], a3 = m3[k], a4 = m4[k];
    const float s12 = a1 + a2, d12 = a1 - a2, s34 = a3 + a4, d34 = a3 - a4;
    y0[k] = m0[k] + s12 + s34;
    y1[k] = d12 + 2.f * d34;
    y2[k] = s12 + 4.f * s34;
    y3[k] = d12 + 8.f * d34 + m5[k];
  }
}

// Output transform of the 36 planes src[j * stride_j + p] of one (o, t) into an (H, W) plane.
void untransform_plane(const float* src, int64_t stride_j, int64_t H, int64_t W, int64_t nh, int64_t nw,
                       float bias, float* dst) {
  std::vector<float> r(6 * 4 * nw);   // r[i][q][tx]: horizontal transform of row i of the tile
  std::vector<float> y(4 * 4 * nw);   // y[p][q][tx]
  for (int64_t ty = 0; ty < nh; ++ty) {
    for (int64_t i = 0; i < 6; ++i) {
      const float* s = src + (i * 6) * stride_j + ty * nw;
      float* ri = &r[i * 4 * nw];
      at4(s, s + stride_j, s + 2 * stride_j, s + 3 * stride_j, s + 4 * stride_j, s + 5 * stride_j,
          ri, ri + nw, ri + 2 * nw, ri + 3 * nw, nw);
    }
    const int64_t n = 4 * nw;
    at4(&r[0 * n], &r[1 * n], &r[2 * n], &r[3 * n], &r[4 * n], &r[5 * n],
        &y[0 * n], &y[1 * n], &y[2 * n], &y[3 * n], n);
    for (int64_t p = 0; p < 4; ++p) {
      const int64_t oy = 4 * ty + p;
      if (oy >= H) break;
      float* row = dst + oy * W;
      const float* yp = &y[p * n];
      if (4 * nw == W) {
        for (int64_t tx = 0; tx < nw; ++tx) {
          row[4 * tx + 0] = yp[0 * nw + tx] + bias;
          row[4 * tx + 1] = yp[1 * nw + tx] + bias;
          row[4 * tx + 2] = yp[2 * nw + tx] + bias;
          row[4 * tx + 3] = yp[3 * nw + tx] + bias;
        }
      } else {
        for (int64_t ox = 0; ox < W; ++ox) row[ox] = yp[(ox % 4) * nw + ox / 4] + bias;
      }
    }
  }
}

}  // namespace

// xt (B, C, T + 2, H, W) float32 contiguous; U (36, Co, 3C); bias (Co) or empty.
// Returns (B, Co, T, H, W).
torch::Tensor winograd_causal_conv3d(torch::Tensor xt, torch::Tensor U, torch::Tensor bias, bool replicate) {
  TORCH_CHECK(xt.dim() == 5 && xt.scalar_type() == torch::kFloat32 && xt.is_contiguous(), "xt: contiguous float32 (B, C, T, H, W)");
  TORCH_CHECK(U.dim() == 3 && U.size(0) == 36 && U.is_contiguous(), "U: (36, Co, 3C)");
  const int64_t B = xt.size(0), C = xt.size(1), Tp = xt.size(2), H = xt.size(3), W = xt.size(4);
  const int64_t Co = U.size(1);
  TORCH_CHECK(U.size(2) == 3 * C, "U's last dim must be 3 * C");
  TORCH_CHECK(Tp >= 3, "need at least 3 (padded) frames");
  const int64_t T = Tp - 2;
  const int64_t nh = (H + 3) / 4, nw = (W + 3) / 4, P = nh * nw;
  auto opts = xt.options();
  auto out = torch::empty({B, Co, T, H, W}, opts);
  auto ring = torch::empty({36, 5, C, P}, opts);   // V of the last three frames, slot = frame % 3 (+ mirrors)
  auto M = torch::empty({36, Co, P}, opts);
  const bool has_bias = bias.defined() && bias.numel() == Co;
  const float* bp = has_bias ? bias.data_ptr<float>() : nullptr;
  float* ring_p = ring.data_ptr<float>();
  const float* x_p = xt.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  const float* M_p = M.data_ptr<float>();
  const int64_t ring_stride_j = 5 * C * P;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t f = 0; f < Tp; ++f) {
      const int64_t slot = f % 3;
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const float* src = x_p + ((b * C + c) * Tp + f) * H * W;
          transform_plane(src, H, W, nh, nw, replicate, ring_p + (slot * C + c) * P, ring_stride_j);
        }
      });
      if (slot < 2) ring.select(1, slot + 3).copy_(ring.select(1, slot));
      if (f < 2) continue;
      const int64_t t = f - 2;             // output frame: input frames t, t + 1, t + 2
      at::bmm_out(M, U, ring.narrow(1, t % 3, 3).flatten(1, 2));
      at::parallel_for(0, Co, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
          untransform_plane(M_p + o * P, Co * P, H, W, nh, nw, has_bias ? bp[o] : 0.f,
                            out_p + ((b * Co + o) * T + t) * H * W);
        }
      });
    }
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("winograd_causal_conv3d", &winograd_causal_conv3d, "Winograd F(4x4,3x3) causal 3D conv (float32, CPU)");
}
