#pragma once
// Training progress: a one-line bar redrawn in place on a terminal, plain log lines otherwise
// (files, CI logs), so that a log never fills with carriage returns.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace txtcls::train {

class Progress {
 public:
  // total: steps in this epoch; every: log-line period when not on a terminal; out = nullptr
  // only keeps the statistics.
  Progress(std::string title, int64_t total, FILE* out = stderr, int64_t every = 50)
      : title_(std::move(title)), total_(total), out_(out), every_(every), tty_(out && isatty(fileno(out)) != 0),
        start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

  void update(int64_t step, double loss, int64_t tokens) {
    tokens_ += tokens;
    loss_sum_ += loss;
    ++n_;
    auto now = std::chrono::steady_clock::now();
    if (!out_) return;
    if (tty_) {
      if (step < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      const int width = 30;
      int filled = total_ ? static_cast<int>(width * step / total_) : width;
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(width, '.');
      std::fprintf(out_, "\r%s [%s] %lld/%lld loss %.4f  %.0f tok/s ", title_.c_str(), bar.c_str(),
                   static_cast<long long>(step), static_cast<long long>(total_), loss_sum_ / n_, rate(now));
      std::fflush(out_);
    } else if (step % every_ == 0 || step == total_) {
      std::fprintf(out_, "%s step %lld/%lld loss %.4f %.0f tok/s\n", title_.c_str(), static_cast<long long>(step),
                   static_cast<long long>(total_), loss_sum_ / n_, rate(now));
      std::fflush(out_);
    }
  }

  void finish() {
    if (out_ && tty_) std::fprintf(out_, "\n");
  }
  double mean_loss() const { return n_ ? loss_sum_ / n_ : 0.0; }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  double tokens_per_second() const { return rate(std::chrono::steady_clock::now()); }

 private:
  double rate(std::chrono::steady_clock::time_point now) const {
    double s = std::chrono::duration<double>(now - start_).count();
    return s > 0 ? static_cast<double>(tokens_) / s : 0.0;
  }
  std::string title_;
  int64_t total_;
  FILE* out_;
  int64_t every_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t tokens_ = 0;
  double loss_sum_ = 0;
  int64_t n_ = 0;
};

}  // namespace txtcls::train
