#pragma once
// Errors: every failure is a txtcls::Error whose message names the op (or file) and the
// shapes or values involved, so that a user can find the offending call without a debugger.
#include <sstream>
#include <stdexcept>
#include <string>

namespace txtcls {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
[[noreturn]] inline void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}
}  // namespace detail

}  // namespace txtcls

// TXTCLS_CHECK(cond, "op: ", details...) throws txtcls::Error with the concatenated message.
#define TXTCLS_CHECK(cond, ...)                        \
  do {                                                 \
    if (!(cond)) ::txtcls::detail::fail(__VA_ARGS__);  \
  } while (0)
