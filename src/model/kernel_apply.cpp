// The kernel head's application for CPU inference in f32 (src/model/kernel_apply.rs): per pass
// and pixel, the softmax of 9 logits per RGB channel and the weighted sum of the 3x3
// neighbourhood at the pass's dilation (reflect borders, replicate where the frame is not
// larger than the dilation), one pass over channels-last memory per dilation, 16 pixels of a
// row at a time (AVX-512 gathers). The reference (`apply_kernels` in head.rs) runs 9 strided
// multiply-adds per pass over whole tensors and a softmax over all logits at once: 80-90 ms
// per pass on one thread for a 640x360 frame on the project's 2-core machine under load
// (this: 10-16 ms). exp() is a Cephes-style polynomial on AVX-512 (about 1 ulp), so results
// differ from the reference's by float rounding. AVX-512 only; elsewhere the caller keeps the
// reference.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>

#include <cstdint>
#include <exception>
#include <vector>

#include "shim.h"

namespace {

using clipdenoise_shim::copy_message;

constexpr int64_t kTaps = 9;
constexpr int64_t kGroup = 3 * kTaps;  // logits of one pass: RGB x 9 taps

__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts).
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline int64_t border(int64_t i, int64_t n, bool reflect) {
  if (reflect) {
    return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
  }
  return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// One pass over rows [r0, r1) of all images (row r: image r / h, row r % h), 16 pixels of a row
// at a time (the last ones masked): the logits gathered from `logits` NHWC (n, h, w, c) with
// this pass's 27 at `off`, the neighbours from `src` NHWC (n, h, w, 3), the result scattered
// into `dst` NHWC (n, h, w, 3).
__attribute__((target("avx512f"))) void pass_rows(const float *logits, int64_t c, int64_t off,
                                                  const float *src, float *dst, int64_t h,
                                                  int64_t w, int64_t d, bool reflect,
                                                  int64_t r0, int64_t r1) {
  // Per column, the offsets in a src row of its three neighbours' pixels (x - d, x, x + d).
  std::vector<int32_t> xo(static_cast<size_t>(3 * w));
  for (int64_t k = 0; k < 3; ++k) {
    for (int64_t x = 0; x < w; ++x) {
      xo[k * w + x] = static_cast<int32_t>(border(x + (k - 1) * d, w, reflect) * 3);
    }
  }
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / h, y = r % h;
    const float *lrow = logits + (b * h + y) * w * c + off;
    const float *rows[3];
    for (int64_t k = 0; k < 3; ++k) {
      rows[k] = src + (b * h + border(y + (k - 1) * d, h, reflect)) * w * 3;
    }
    float *out = dst + (b * h + y) * w * 3;
    for (int64_t x = 0; x < w; x += 16) {
      const int64_t left = w - x;
      const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                     : static_cast<__mmask16>((1u << left) - 1);
      const __m512i px = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(x)), lane);
      const __m512i lidx = _mm512_mullo_epi32(px, _mm512_set1_epi32(static_cast<int32_t>(c)));
      const __m512i oidx = _mm512_mullo_epi32(px, _mm512_set1_epi32(3));
      __m512i nb[3];
      for (int64_t k = 0; k < 3; ++k) {
        nb[k] = _mm512_maskz_loadu_epi32(m, xo.data() + k * w + x);
      }
      for (int64_t g = 0; g < 3; ++g) {
        __m512 e[kTaps];
        __m512 mx = _mm512_set1_ps(-3.0e38f);
        for (int64_t k = 0; k < kTaps; ++k) {
          e[k] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lidx,
                                          lrow + g * kTaps + k, 4);
          mx = _mm512_max_ps(mx, e[k]);
        }
        __m512 sum = _mm512_setzero_ps();
        for (int64_t k = 0; k < kTaps; ++k) {
          e[k] = exp512(_mm512_sub_ps(e[k], mx));
          sum = _mm512_add_ps(sum, e[k]);
        }
        const __m512 inv = _mm512_div_ps(one, sum);
        const __m512i gi = _mm512_set1_epi32(static_cast<int32_t>(g));
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < kTaps; ++k) {
          const __m512 v = _mm512_mask_i32gather_ps(
              _mm512_setzero_ps(), m, _mm512_add_epi32(nb[k % 3], gi), rows[k / 3], 4);
          acc = _mm512_fmadd_ps(v, _mm512_mul_ps(e[k], inv), acc);
        }
        _mm512_mask_i32scatter_ps(out + g, m, oidx, acc, 4);
      }
    }
  }
}

}  // namespace

extern "C" {

// 1 when this CPU runs the kernel, else 0.
int cd_apply_kernels_available() { return __builtin_cpu_supports("avx512f") ? 1 : 0; }

// The kernel head's passes for `logits` (N, H, W, passes * 27) f32 contiguous (channels-last
// logits permuted) on `image` (N, H, W, 3) f32 contiguous, pass s at dilations[s]. Returns a
// new (N, H, W, 3) contiguous tensor, or null with *err set (free it with free()).
at::Tensor *cd_apply_kernels(const at::Tensor *logits, const at::Tensor *image,
                             const int64_t *dilations, int64_t passes, char **err) {
  try {
    const at::Tensor &l = *logits, &x = *image;
    if (cd_apply_kernels_available() == 0 || l.dim() != 4 || x.dim() != 4 ||
        !l.device().is_cpu() || !x.device().is_cpu() || l.scalar_type() != at::kFloat ||
        x.scalar_type() != at::kFloat || !l.is_contiguous() || !x.is_contiguous() ||
        x.size(3) != 3 || passes < 1 || l.size(3) != passes * kGroup || l.size(0) != x.size(0) ||
        l.size(1) != x.size(1) || l.size(2) != x.size(2)) {
      *err = copy_message(
          "apply_kernels: wants AVX-512, logits (N, H, W, passes x 27) and image (N, H, W, 3), "
          "f32 contiguous on the CPU");
      return nullptr;
    }
    const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = l.size(3);
    const bool reflect_ok = h > 0 && w > 0;
    at::Tensor a = at::empty({n, h, w, 3}, x.options());
    at::Tensor b = at::empty({n, h, w, 3}, x.options());
    const float *lp = l.data_ptr<float>();
    const float *src = x.data_ptr<float>();
    for (int64_t s = 0; s < passes; ++s) {
      const int64_t d = dilations[s];
      const bool reflect = reflect_ok && (h < w ? h : w) > d;
      float *dst = (s % 2 == 0 ? a : b).data_ptr<float>();
      clipdenoise_shim::parallel_rows(n * h, 8, [&](int64_t r0, int64_t r1) {
        pass_rows(lp, c, s * kGroup, src, dst, h, w, d, reflect, r0, r1);
      });
      src = dst;
    }
    return new at::Tensor(std::move((passes - 1) % 2 == 0 ? a : b));
  }
  CLIPDENOISE_CATCH_TO_ERR(err, "apply_kernels")
}

}  // extern "C"
