// Shared by the C++ shims of src/model/ (conv_pointwise.cpp, upsample_cat.cpp,
// conv_small_out.cpp): errors cross the FFI boundary as a malloc'd copy of the message (the
// Rust side frees it with free()), never as a C++ exception; work split over threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace clipdenoise_shim {

inline char *copy_message(const char *m) {
  size_t n = std::strlen(m);
  char *s = static_cast<char *>(std::malloc(n + 1));
  if (s != nullptr) {
    std::memcpy(s, m, n + 1);
  }
  return s;
}

// rows(begin, end) over [0, total), split evenly over libtorch's intra-op thread count, at
// least `grain` items a part. Plain threads: libtorch's OpenMP pragma in at::parallel_for
// would need the shims built with OpenMP and linked to libtorch's libgomp. `rows` must not
// throw.
template <typename F>
void parallel_rows(int64_t total, int64_t grain, const F &rows) {
  const int64_t parts =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), total / grain));
  auto part = [&](int64_t p) { rows(total * p / parts, total * (p + 1) / parts); };
  std::vector<std::thread> threads;
  try {
    for (int64_t p = 1; p < parts; ++p) {
      threads.emplace_back(part, p);
    }
  } catch (...) {
    // No more threads: the parts not started run on this one.
  }
  part(0);
  for (int64_t p = 1 + static_cast<int64_t>(threads.size()); p < parts; ++p) {
    part(p);
  }
  for (auto &t : threads) {
    t.join();
  }
}

}  // namespace clipdenoise_shim

// The catch clauses of an extern "C" entry that returns a pointer: a C++ exception becomes
// *err (a malloc'd copy of its message; `op_name`, a string literal, names the operation for
// one that is not a std::exception) and the entry returns null.
// Use: `try { ... } CLIPDENOISE_CATCH_TO_ERR(err, "conv_small_out")`.
#define CLIPDENOISE_CATCH_TO_ERR(err, op_name)                                     \
  catch (const std::exception &e) {                                                \
    *(err) = clipdenoise_shim::copy_message(e.what());                             \
    return nullptr;                                                                \
  }                                                                                \
  catch (...) {                                                                    \
    *(err) = clipdenoise_shim::copy_message("unknown C++ exception in " op_name);  \
    return nullptr;                                                                \
  }
