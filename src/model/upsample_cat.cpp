// The decoder's "bilinear x2 upsampling (align_corners) of x, then cat([up, skip], 1)" as one
// pass for CPU inference (src/model/upsample_cat.rs): each output pixel's first C1 channels
// are interpolated from x's four neighbours and its last C2 channels copied from skip,
// written once into a channels_last result. libtorch's two ops write the upsampled tensor,
// read it back in the cat's copy, and copy the skip's few channels per pixel with a generic
// strided loop; this writes each output byte once.
//
// The interpolation follows libtorch's channels_last bilinear kernel (UpSampleKernel.cpp,
// cpu_upsample_linear_channels_last): the same source indices and lambdas in float, the same
// four weights w00..w11 and the same sum order, accumulated in float, rounded to the tensor's
// kind once (bf16: round to nearest even). Errors come back as a malloc'd message, never as a
// C++ exception across the FFI boundary.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "shim.h"

namespace {

using clipdenoise_shim::copy_message;

// One output coordinate's two source indices and weights (libtorch's
// compute_source_index_and_lambda with align_corners).
struct Tap {
  int64_t i0, i1;
  float l0, l1;
};

std::vector<Tap> taps(int64_t in, int64_t out) {
  std::vector<Tap> t(out);
  const float scale = out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.f;
  for (int64_t o = 0; o < out; ++o) {
    if (in == out) {
      t[o] = {o, o, 1.f, 0.f};
      continue;
    }
    const float real = scale * static_cast<float>(o);
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(real)), in - 1);
    const float l1 = std::min(std::max(real - static_cast<float>(i0), 0.f), 1.f);
    t[o] = {i0, i0 + (i0 < in - 1 ? 1 : 0), 1.f - l1, l1};
  }
  return t;
}

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) {
    return 0x7fc0;
  }
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

// out[d] = a[d]*w00 + b[d]*w01 + c[d]*w10 + e[d]*w11, d < n; compiled for AVX-512, AVX2 and
// the baseline, chosen at load.
__attribute__((target_clones("avx512f", "avx2", "default"))) void
lerp4_f32(float *__restrict out, const float *__restrict a, const float *__restrict b,
          const float *__restrict c, const float *__restrict e, float w00, float w01, float w10,
          float w11, int64_t n) {
  for (int64_t d = 0; d < n; ++d) {
    out[d] = a[d] * w00 + b[d] * w01 + c[d] * w10 + e[d] * w11;
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void
lerp4_bf16(uint16_t *__restrict out, const uint16_t *__restrict a, const uint16_t *__restrict b,
           const uint16_t *__restrict c, const uint16_t *__restrict e, float w00, float w01,
           float w10, float w11, int64_t n) {
  for (int64_t d = 0; d < n; ++d) {
    out[d] = float_to_bf16(bf16_to_float(a[d]) * w00 + bf16_to_float(b[d]) * w01 +
                           bf16_to_float(c[d]) * w10 + bf16_to_float(e[d]) * w11);
  }
}

template <typename T>
void lerp4(T *out, const T *a, const T *b, const T *c, const T *e, float w00, float w01,
           float w10, float w11, int64_t n);

template <>
void lerp4<float>(float *out, const float *a, const float *b, const float *c, const float *e,
                  float w00, float w01, float w10, float w11, int64_t n) {
  lerp4_f32(out, a, b, c, e, w00, w01, w10, w11, n);
}

template <>
void lerp4<uint16_t>(uint16_t *out, const uint16_t *a, const uint16_t *b, const uint16_t *c,
                     const uint16_t *e, float w00, float w01, float w10, float w11, int64_t n) {
  lerp4_bf16(out, a, b, c, e, w00, w01, w10, w11, n);
}

// T: float, or uint16_t standing for bf16 bits.
template <typename T>
void run(const at::Tensor &x, const at::Tensor &skip, at::Tensor &out) {
  const int64_t n = x.size(0), c1 = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c2 = skip.size(1), oh = skip.size(2), ow = skip.size(3);
  const int64_t c = c1 + c2;
  const T *xp = static_cast<const T *>(x.data_ptr());
  const T *sp = static_cast<const T *>(skip.data_ptr());
  T *op = static_cast<T *>(out.data_ptr());
  const int64_t sn = skip.stride(0), sc = skip.stride(1), sh = skip.stride(2), sw = skip.stride(3);
  const std::vector<Tap> th = taps(h, oh), tw = taps(w, ow);
  // Rows of the output, all images.
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / oh, y = r % oh;
      const Tap &ty = th[y];
      const T *row0 = xp + (b * h + ty.i0) * w * c1;
      const T *row1 = xp + (b * h + ty.i1) * w * c1;
      const T *srow = sp + b * sn + y * sh;
      T *orow = op + r * ow * c;
      for (int64_t x_ = 0; x_ < ow; ++x_) {
        const Tap &tx = tw[x_];
        T *o = orow + x_ * c;
        lerp4<T>(o, row0 + tx.i0 * c1, row0 + tx.i1 * c1, row1 + tx.i0 * c1, row1 + tx.i1 * c1,
                 ty.l0 * tx.l0, ty.l0 * tx.l1, ty.l1 * tx.l0, ty.l1 * tx.l1, c1);
        const T *s = srow + x_ * sw;
        if (sc == 1) {
          std::memcpy(o + c1, s, c2 * sizeof(T));
        } else {
          for (int64_t k = 0; k < c2; ++k) {
            o[c1 + k] = s[k * sc];
          }
        }
      }
    }
  };
  clipdenoise_shim::parallel_rows(n * oh, 8, rows);
}

}  // namespace

extern "C" {

// cat([upsample_bilinear2d(x, 2x, align_corners), skip], 1), channels_last. `x` (N, C1, h, w)
// channels_last (NHWC strides), `skip` (N, C2, 2h, 2w) any strides, both float or both bf16,
// on the CPU. Returns a new tensor, or null with *err set (free it with free()).
at::Tensor *cd_upsample2x_cat(const at::Tensor *x, const at::Tensor *skip, char **err) {
  try {
    const at::Tensor &a = *x, &s = *skip;
    if (a.dim() != 4 || s.dim() != 4 || !a.device().is_cpu() || !s.device().is_cpu() ||
        a.scalar_type() != s.scalar_type() ||
        (a.scalar_type() != at::kFloat && a.scalar_type() != at::kBFloat16) ||
        s.size(0) != a.size(0) || s.size(2) != 2 * a.size(2) || s.size(3) != 2 * a.size(3) ||
        !a.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      *err = copy_message(
          "upsample2x_cat: wants x (N, C1, h, w) channels_last and skip (N, C2, 2h, 2w) on the "
          "CPU, both float or both bf16");
      return nullptr;
    }
    at::Tensor out = at::empty({a.size(0), a.size(1) + s.size(1), s.size(2), s.size(3)},
                               a.options().memory_format(at::MemoryFormat::ChannelsLast));
    if (a.scalar_type() == at::kFloat) {
      run<float>(a, s, out);
    } else {
      run<uint16_t>(a, s, out);
    }
    return new at::Tensor(std::move(out));
  }
  CLIPDENOISE_CATCH_TO_ERR(err, "upsample2x_cat")
}

}  // extern "C"
