#pragma once
// The --device option of the subcommands: "cpu", "cuda" or "cuda:N", checked against the build
// (a program built without the CUDA backend cannot run on a GPU) and the machine, with messages
// that name the flag. Selecting a GPU also makes it the current device, so that kernels and
// copies go to it.
#include <string>

#include "txtcls/cuda/lstm.hpp"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/tensor/device.hpp"

namespace txtcls_cli {

inline txtcls::Device resolve_device(const std::string& cmd, const std::string& value) {
  using txtcls::Device;
  Device d;
  try {
    d = Device::parse(value);
  } catch (const txtcls::Error& e) {
    txtcls::detail::fail(cmd, ": --device ", value, ": ", e.what());
  }
  if (d.is_cpu()) return d;
#ifndef TXTCLS_WITH_CUDA
  txtcls::detail::fail(cmd, ": --device ", value,
                       ": this build has no CUDA support; rebuild with nvcc found or -DTXTCLS_CUDA=ON");
#else
  const int n = txtcls::cuda::device_count();
  TXTCLS_CHECK(n > 0, cmd, ": --device ", value, ": no CUDA device (the driver reports none); use --device cpu");
  TXTCLS_CHECK(d.index >= 0 && d.index < n, cmd, ": --device ", value, ": no such device (", n,
               n == 1 ? " CUDA device, cuda:0)" : " CUDA devices, cuda:0 to cuda:" + std::to_string(n - 1) + ")");
  txtcls::cuda::set_device(d.index);
  return d;
#endif
}

// The --lstm-backend option of `train`: "own" (the library's kernels, on any device) or "cudnn"
// (cuDNN's RNN, on a GPU in a build that links cuDNN). Checked before any work.
inline void apply_lstm_backend(const std::string& cmd, const std::string& value, const txtcls::Device& device) {
  if (value == "own") return;
  TXTCLS_CHECK(value == "cudnn", cmd, ": --lstm-backend ", value, ": unknown backend (expected own or cudnn)");
  TXTCLS_CHECK(device.is_cuda(), cmd, ": --lstm-backend cudnn: cuDNN runs on a GPU; add --device cuda");
#ifdef TXTCLS_WITH_CUDA
  TXTCLS_CHECK(txtcls::cuda::cudnn_available(), cmd,
               ": --lstm-backend cudnn: this build has no cuDNN (it was not found when the library was built)");
  txtcls::cuda::set_lstm_backend(txtcls::cuda::LstmBackend::Cudnn);
#endif
}

}  // namespace txtcls_cli
