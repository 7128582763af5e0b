// A 3x3 convolution (stride 1, padding 1) with few output channels, for CPU inference in f32
// (src/model/conv_small_out.rs): the pixel head's last conv (16 -> 3 channels at full
// resolution). oneDNN pads its output channels to a block of 16 and then runs as slowly as a
// 16 -> 16 conv (10 ms per 640x384 frame against 11 ms for the 16 -> 16 conv beside it, on the
// project's 2-core Xeon); here each output pixel is computed directly: per tap one vector of
// input channels, one FMA per output channel, one horizontal sum per output channel at the end.
// AVX-512 only (input channels a multiple of 16); elsewhere the caller keeps oneDNN's conv.
// The sum order differs from oneDNN's, so results differ by float rounding (a few ulp).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>

#include <cstdint>
#include <exception>

#include "shim.h"

namespace {

using clipdenoise_shim::copy_message;

// Output rows [r0, r1) of all images (row r: image r / h, row r % h). `in` NHWC (n, h, w, ic),
// `wt` (OC, 3, 3, ic), `out` NHWC (n, h, w, OC).
template <int OC>
__attribute__((target("avx512f"))) void rows_avx512(const float *in, int64_t h, int64_t w,
                                                    int64_t ic, const float *wt,
                                                    const float *bias, float *out, int64_t r0,
                                                    int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / h, y = r % h;
    for (int64_t x = 0; x < w; ++x) {
      __m512 acc[OC];
      for (int o = 0; o < OC; ++o) {
        acc[o] = _mm512_setzero_ps();
      }
      for (int64_t ky = 0; ky < 3; ++ky) {
        const int64_t yy = y + ky - 1;
        if (yy < 0 || yy >= h) {
          continue;
        }
        for (int64_t kx = 0; kx < 3; ++kx) {
          const int64_t xx = x + kx - 1;
          if (xx < 0 || xx >= w) {
            continue;
          }
          const float *ip = in + ((b * h + yy) * w + xx) * ic;
          const float *wp = wt + (ky * 3 + kx) * ic;
          for (int64_t i = 0; i < ic; i += 16) {
            const __m512 v = _mm512_loadu_ps(ip + i);
            for (int o = 0; o < OC; ++o) {
              acc[o] = _mm512_fmadd_ps(v, _mm512_loadu_ps(wp + o * 9 * ic + i), acc[o]);
            }
          }
        }
      }
      float *op = out + ((b * h + y) * w + x) * OC;
      for (int o = 0; o < OC; ++o) {
        op[o] = _mm512_reduce_add_ps(acc[o]) + (bias != nullptr ? bias[o] : 0.f);
      }
    }
  }
}

template <int OC>
void run(const float *in, int64_t n, int64_t h, int64_t w, int64_t ic, const float *wt,
         const float *bias, float *out) {
  clipdenoise_shim::parallel_rows(n * h, 8, [&](int64_t r0, int64_t r1) {
    rows_avx512<OC>(in, h, w, ic, wt, bias, out, r0, r1);
  });
}

}  // namespace

extern "C" {

// 1 when this CPU runs the AVX-512 kernel, else 0.
int cd_conv_small_out_available() { return __builtin_cpu_supports("avx512f") ? 1 : 0; }

// conv2d(x, w, b, stride 1, padding 1) for `x` (N, C, H, W) f32 channels_last with C a
// multiple of 16, `wt` (O, 3, 3, C) f32 contiguous with 1 <= O <= 4, `b` null or (O) f32.
// Returns a new channels_last (N, O, H, W) tensor, or null with *err set (free it with free()).
at::Tensor *cd_conv_small_out(const at::Tensor *x, const at::Tensor *wt, const at::Tensor *b,
                              char **err) {
  try {
    const at::Tensor &a = *x, &k = *wt;
    const int64_t oc = k.dim() == 4 ? k.size(0) : 0;
    if (cd_conv_small_out_available() == 0 || a.dim() != 4 || !a.device().is_cpu() ||
        a.scalar_type() != at::kFloat || !a.is_contiguous(at::MemoryFormat::ChannelsLast) ||
        a.size(1) % 16 != 0 || a.size(1) == 0 || k.scalar_type() != at::kFloat ||
        !k.is_contiguous() || oc < 1 || oc > 4 || k.size(1) != 3 || k.size(2) != 3 ||
        k.size(3) != a.size(1) ||
        (b != nullptr && (b->scalar_type() != at::kFloat || !b->is_contiguous() ||
                          b->numel() != oc))) {
      *err = copy_message(
          "conv_small_out: wants AVX-512, x (N, 16k, H, W) f32 channels_last, w (1-4, 3, 3, "
          "16k) f32");
      return nullptr;
    }
    const int64_t n = a.size(0), c = a.size(1), h = a.size(2), w = a.size(3);
    at::Tensor out =
        at::empty({n, oc, h, w}, a.options().memory_format(at::MemoryFormat::ChannelsLast));
    const float *in = a.data_ptr<float>();
    const float *kp = k.data_ptr<float>();
    const float *bp = b == nullptr ? nullptr : b->data_ptr<float>();
    float *op = out.data_ptr<float>();
    switch (oc) {
      case 1: run<1>(in, n, h, w, c, kp, bp, op); break;
      case 2: run<2>(in, n, h, w, c, kp, bp, op); break;
      case 3: run<3>(in, n, h, w, c, kp, bp, op); break;
      default: run<4>(in, n, h, w, c, kp, bp, op); break;
    }
    return new at::Tensor(std::move(out));
  }
  CLIPDENOISE_CATCH_TO_ERR(err, "conv_small_out")
}

}  // extern "C"
