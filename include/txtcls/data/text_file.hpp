#pragma once
// The file layer under every data reader: gzip or plain input decided by the file's first bytes
// (so a compressed file without ".gz" still reads), streamed line by line with 1-based line
// numbers for error messages (a leading UTF-8 byte order mark dropped), strict UTF-8 checking,
// and writes that go through a temporary file and a rename so that a crash never leaves a
// half-written vocabulary or label file behind.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "txtcls/core/error.hpp"

namespace txtcls::data {

// "path:line", the prefix of every error about a place in a text file.
inline std::string where(const std::string& path, size_t line) { return path + ":" + std::to_string(line); }

// True when the file starts with the gzip magic bytes 1f 8b (whatever its name).
inline bool is_gzip_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char m[2] = {0, 0};
  in.read(reinterpret_cast<char*>(m), 2);
  return in.gcount() == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

// Streams the lines of a plain or gzip file. zlib's gzread passes non-gzip input through
// unchanged, so one code path serves both. A line is returned without its LF and without one
// trailing CR (files written on Windows); CR elsewhere is kept.
class LineReader {
 public:
  explicit LineReader(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    TXTCLS_CHECK(!std::filesystem::is_directory(path_, ec), path_, ": is a directory, expected a file");
    gzip_ = is_gzip_file(path_);
    file_ = gzopen(path_.c_str(), "rb");
    TXTCLS_CHECK(file_ != nullptr, path_, ": cannot open (", std::strerror(errno), ")");
    gzbuffer(file_, 1 << 17);
    buf_.resize(1 << 20);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  ~LineReader() {
    if (file_) gzclose(file_);
  }

  // The next line (a view into an internal buffer, valid until the next call); false at the end.
  bool next(std::string_view& line) {
    for (;;) {
      const char* b = buf_.data() + pos_;
      const void* nl = std::memchr(b, '\n', len_ - pos_);
      if (nl) {
        size_t n = static_cast<const char*>(nl) - b;
        pos_ += n + 1;
        return emit(line, b, n);
      }
      if (eof_) {
        if (pos_ == len_) return false;
        size_t n = len_ - pos_;
        pos_ = len_;
        return emit(line, b, n);
      }
      refill();
    }
  }

  size_t line_number() const { return line_; }
  const std::string& path() const { return path_; }
  bool gzip() const { return gzip_; }
  std::string here() const { return where(path_, line_); }

 private:
  bool emit(std::string_view& line, const char* b, size_t n) {
    if (n > 0 && b[n - 1] == '\r') --n;
    if (line_ == 0 && n >= 3 && std::memcmp(b, "\xEF\xBB\xBF", 3) == 0) b += 3, n -= 3;  // a UTF-8 byte order mark
    line = std::string_view(b, n);
    ++line_;
    return true;
  }

  // Moves the unread tail to the front, grows the buffer when one line fills it, and reads more.
  void refill() {
    if (pos_ > 0) {
      std::memmove(buf_.data(), buf_.data() + pos_, len_ - pos_);
      len_ -= pos_;
      pos_ = 0;
    }
    if (len_ == buf_.size()) buf_.resize(buf_.size() * 2);
    size_t want = std::min<size_t>(buf_.size() - len_, size_t(1) << 30);
    int got = gzread(file_, buf_.data() + len_, static_cast<unsigned>(want));
    int err = Z_OK;
    const char* msg = gzerror(file_, &err);
    if (got < 0 || (err != Z_OK && err != Z_STREAM_END))
      ::txtcls::detail::fail(path_, ": read error after line ", line_, " (", gzip_ ? "corrupt or truncated gzip data: " : "",
                   msg ? msg : "unknown", ")");
    if (got == 0) eof_ = true;
    len_ += static_cast<size_t>(got);
  }

  std::string path_;
  gzFile file_ = nullptr;
  bool gzip_ = false;
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0, line_ = 0;
  bool eof_ = false;
};

// The whole (decompressed) content of a file.
inline std::string read_file(const std::string& path) {
  std::error_code ec;
  TXTCLS_CHECK(!std::filesystem::is_directory(path, ec), path, ": is a directory, expected a file");
  const bool gz = is_gzip_file(path);
  gzFile f = gzopen(path.c_str(), "rb");
  TXTCLS_CHECK(f != nullptr, path, ": cannot open (", std::strerror(errno), ")");
  std::string out;
  char chunk[1 << 16];
  for (;;) {
    int got = gzread(f, chunk, sizeof chunk);
    int err = Z_OK;
    const char* msg = gzerror(f, &err);
    if (got < 0 || (err != Z_OK && err != Z_STREAM_END)) {
      std::string m = msg ? msg : "unknown";
      gzclose(f);
      ::txtcls::detail::fail(path, ": read error (", gz ? "corrupt or truncated gzip data: " : "", m, ")");
    }
    if (got == 0) break;
    out.append(chunk, static_cast<size_t>(got));
  }
  gzclose(f);
  return out;
}

// Writes `content` to `path` through `path.tmp` + rename, so readers see the old file or the new
// one, never a torn one.
inline void write_file_atomic(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TXTCLS_CHECK(out.good(), path, ": cannot write (", std::strerror(errno), ")");
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    TXTCLS_CHECK(out.good(), path, ": write failed (", std::strerror(errno), ")");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    ::txtcls::detail::fail(path, ": cannot replace the file (", ec.message(), ")");
  }
}

// ------------------------------------------------------------------------------------ UTF-8

inline constexpr size_t kValidUtf8 = std::string_view::npos;

// Offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or kValidUtf8.
inline size_t invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;  // excludes UTF-16 surrogates
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;  // nothing above U+10FFFF
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return i;
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return kValidUtf8;
}

// Each ill-formed byte replaced by U+FFFD.
inline std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  while (!s.empty()) {
    size_t bad = invalid_utf8_at(s);
    if (bad == kValidUtf8) {
      out.append(s);
      break;
    }
    out.append(s.substr(0, bad));
    out.append("\xEF\xBF\xBD");
    s.remove_prefix(bad + 1);
  }
  return out;
}

// Every byte read as a Latin-1 (ISO-8859-1) code point, written as UTF-8.
inline std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// Hex of the bytes around an invalid position, for error messages ("bytes e9 74").
inline std::string hex_bytes(std::string_view s, size_t at, size_t count = 4) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = at; i < s.size() && i < at + count; ++i) {
    if (!out.empty()) out.push_back(' ');
    auto c = static_cast<unsigned char>(s[i]);
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

}  // namespace txtcls::data
