// Shared by the C++ shims of src/model/ (conv_pointwise.cpp, upsample_cat.cpp): errors cross
// the FFI boundary as a malloc'd copy of the message (the Rust side frees it with free()),
// never as a C++ exception.
#pragma once

#include <cstdlib>
#include <cstring>

namespace clipdenoise_shim {

inline char *copy_message(const char *m) {
  size_t n = std::strlen(m);
  char *s = static_cast<char *>(std::malloc(n + 1));
  if (s != nullptr) {
    std::memcpy(s, m, n + 1);
  }
  return s;
}

}  // namespace clipdenoise_shim
