#pragma once
// UTF-8 validation and the quoting of names in error messages. Names come from files, so they
// may hold newlines, control characters or broken UTF-8; quoted() makes any of them safe to put
// into a one-line message.
#include <cstdint>
#include <string>
#include <string_view>

namespace txtcls::io {

// Index of the first byte that does not belong to well-formed UTF-8 (no overlong forms, no
// surrogates, nothing above U+10FFFF), or npos when the whole text is valid.
inline size_t utf8_invalid_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Call it qualified (io::quoted): for a std::string argument an unqualified call also finds
// std::quoted through argument-dependent lookup.
// 'name' in single quotes; control characters, quotes and backslashes escaped, bytes that are
// not valid UTF-8 written as \xNN, everything else (non-ASCII letters included) kept as is.
inline std::string quoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // A valid multi-byte sequence is copied whole; its length follows from the lead byte.
      const size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      if (i + len <= s.size() && utf8_invalid_at(s.substr(i, len)) == std::string_view::npos) {
        out.append(s.substr(i, len));
        i += len;
      } else {
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 15];
        ++i;
      }
      continue;
    }
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\\': out += "\\\\"; break;
      case '\'': out += "\\'"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += "'";
  return out;
}

}  // namespace txtcls::io
