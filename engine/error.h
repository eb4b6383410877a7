// engine/error.h — the one exception type of the library. Library code throws; only tools/
// turns an Error into a message and an exit status.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace hisvid {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace hisvid
