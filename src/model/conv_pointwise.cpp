// Fused convolutions for CPU inference (src/model/fused.rs): libtorch's oneDNN operators
// `mkldnn::_convolution_pointwise` (conv + bias + activation in one primitive) and its
// `.binary` overload (conv + bias + elementwise add of a second tensor + activation), the ops
// PyTorch's inductor emits for frozen CPU graphs. tch does not bind them (they are registered
// with the dispatcher, not in ATen's function list), so this calls them boxed, by name.
// Errors never cross the FFI boundary as exceptions: they come back as a malloc'd message.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "shim.h"

namespace {

using clipdenoise_shim::copy_message;

std::optional<c10::OperatorHandle> find_op(const char *name, const char *overload) {
  return c10::Dispatcher::singleton().findSchema({name, overload});
}

c10::IValue opt_str(const char *s) {
  if (s == nullptr || std::strcmp(s, "none") == 0) {
    return c10::IValue();
  }
  return c10::IValue(std::string(s));
}

c10::List<std::optional<c10::Scalar>> scalars(const char *unary, double slope) {
  c10::List<std::optional<c10::Scalar>> l;
  if (unary != nullptr && std::strcmp(unary, "leaky_relu") == 0) {
    l.push_back(c10::Scalar(slope));
  }
  return l;
}

}  // namespace

extern "C" {

// 1 when libtorch registers both fused operators (a CPU build with oneDNN), else 0.
int cd_conv_pointwise_available() {
  try {
    return find_op("mkldnn::_convolution_pointwise", "").has_value() &&
                   find_op("mkldnn::_convolution_pointwise", "binary").has_value()
               ? 1
               : 0;
  } catch (...) {
    return 0;
  }
}

// unary(conv(x, w) + b [+ other]): `other` null for the plain op, else added after the
// bias and before the activation. `unary` is "none", "relu" or "leaky_relu" (with `slope`).
// `b` may be null. Returns a new tensor, or null with *err set (free it with free()).
at::Tensor *cd_conv_pointwise(const at::Tensor *x, const at::Tensor *w, const at::Tensor *b,
                              const at::Tensor *other, int64_t stride, int64_t padding,
                              const char *unary, double slope, char **err) {
  try {
    std::vector<int64_t> pad{padding, padding}, str{stride, stride}, dil{1, 1};
    c10::IValue bias = b == nullptr ? c10::IValue() : c10::IValue(*b);
    torch::jit::Stack stack;
    std::optional<c10::OperatorHandle> op;
    if (other == nullptr) {
      op = find_op("mkldnn::_convolution_pointwise", "");
      stack = {c10::IValue(*x), c10::IValue(*w), bias, c10::IValue(pad), c10::IValue(str),
               c10::IValue(dil), c10::IValue(int64_t{1}),
               c10::IValue(std::string(unary == nullptr ? "none" : unary)),
               c10::IValue(scalars(unary, slope)), c10::IValue()};
    } else {
      op = find_op("mkldnn::_convolution_pointwise", "binary");
      stack = {c10::IValue(*x), c10::IValue(*other), c10::IValue(*w), bias, c10::IValue(pad),
               c10::IValue(str), c10::IValue(dil), c10::IValue(int64_t{1}),
               c10::IValue(std::string("add")), c10::IValue(), opt_str(unary),
               c10::IValue(scalars(unary, slope)), c10::IValue()};
    }
    if (!op.has_value()) {
      *err = copy_message("libtorch has no mkldnn::_convolution_pointwise operator");
      return nullptr;
    }
    op->callBoxed(&stack);
    return new at::Tensor(stack.at(0).toTensor());
  }
  CLIPDENOISE_CATCH_TO_ERR(err, "mkldnn::_convolution_pointwise")
}

}  // extern "C"
