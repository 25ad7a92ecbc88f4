#pragma once
// Whole-file reads and crash-safe writes (POSIX).
//
// AtomicFile writes into a fresh temporary file next to the target and renames it over the
// target only in commit(), after the data reached the disk (fsync). Readers therefore see the
// old file or the complete new one, never a prefix, and a failed or abandoned write removes
// its temporary file and leaves an existing target untouched.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "txtcls/core/error.hpp"

namespace txtcls::io {

namespace detail {

inline std::string errno_text(int err) { return std::strerror(err); }

// Closes the descriptor on scope exit unless released.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// A name for the temporary file that no other writer (thread or process) picks at the same time.
inline std::string temp_name_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
}

}  // namespace detail

class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    TXTCLS_CHECK(!path_.empty(), "cannot write a file with an empty path");
    for (int attempt = 0; attempt < 16 && fd_.get() < 0; ++attempt) {
      temp_ = detail::temp_name_for(path_);
      // O_EXCL: never write through a stale temporary left by a crashed writer (or a symlink).
      fd_.reset(::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
      if (fd_.get() < 0 && errno != EEXIST) break;
    }
    if (fd_.get() < 0) {
      const int err = errno;
      temp_.clear();
      txtcls::detail::fail(path_, ": cannot create a temporary file next to it: ", detail::errno_text(err));
    }
  }

  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // An uncommitted file is discarded: the target is left as it was.
  ~AtomicFile() { discard(); }

  const std::string& path() const { return path_; }

  void write(const void* data, size_t size) {
    TXTCLS_CHECK(fd_.get() >= 0, path_, ": write after commit or failure");
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd_.get(), p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail_with_errno("cannot write");
      p += n;
      size -= static_cast<size_t>(n);
    }
  }

  // Makes the new content durable and visible under the target name.
  void commit() {
    TXTCLS_CHECK(fd_.get() >= 0, path_, ": commit after commit or failure");
    if (::fsync(fd_.get()) != 0) fail_with_errno("cannot flush to disk");
    if (::close(fd_.release()) != 0) fail_with_errno("cannot close");
    if (::rename(temp_.c_str(), path_.c_str()) != 0) fail_with_errno("cannot rename the temporary file over it");
    temp_.clear();
    sync_parent_directory();
  }

 private:
  [[noreturn]] void fail_with_errno(const char* what) {
    const int err = errno;
    discard();
    txtcls::detail::fail(path_, ": ", what, ": ", detail::errno_text(err));
  }

  void discard() noexcept {
    fd_.reset();
    if (!temp_.empty()) ::unlink(temp_.c_str());
    temp_.clear();
  }

  // The rename itself is durable only once the directory entry is on disk. Failure here is
  // not reported: the file is complete and in place, only its survival of a power cut is less
  // certain, and some file systems refuse fsync on directories.
  void sync_parent_directory() noexcept {
    std::string dir = std::filesystem::path(path_).parent_path().string();
    if (dir.empty()) dir = ".";
    detail::Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() >= 0) (void)::fsync(d.get());
  }

  std::string path_;
  std::string temp_;
  detail::Fd fd_;
};

// A regular file opened for sequential reading. Refuses anything else (directories, pipes,
// devices), so a reader never blocks on a FIFO or reads an endless device.
class InputFile {
 public:
  explicit InputFile(std::string path) : path_(std::move(path)) {
    fd_.reset(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd_.get() < 0) txtcls::detail::fail(path_, ": cannot open: ", detail::errno_text(errno));
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) txtcls::detail::fail(path_, ": cannot stat: ", detail::errno_text(errno));
    TXTCLS_CHECK(S_ISREG(st.st_mode), path_, ": not a regular file");
    size_ = static_cast<uint64_t>(st.st_size);
  }

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }  // as it was when opened

  // Reads exactly `size` bytes at the current position; `what` names them in errors.
  void read_exact(void* dst, size_t size, const char* what) {
    auto* p = static_cast<uint8_t*>(dst);
    size_t got = 0;
    while (got < size) {
      const ssize_t n = ::read(fd_.get(), p + got, size - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) txtcls::detail::fail(path_, ": cannot read ", what, ": ", detail::errno_text(errno));
      if (n == 0) txtcls::detail::fail(path_, ": file ended while reading ", what, " (got ", got, " of ", size, " bytes)");
      got += static_cast<size_t>(n);
    }
  }

 private:
  std::string path_;
  detail::Fd fd_;
  uint64_t size_ = 0;
};

inline std::vector<uint8_t> read_file(const std::string& path) {
  InputFile f(path);
  std::vector<uint8_t> buf(static_cast<size_t>(f.size()));
  f.read_exact(buf.data(), buf.size(), "the file");
  return buf;
}

}  // namespace txtcls::io
