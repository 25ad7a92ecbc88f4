#pragma once
// The --device option of the subcommands: "cpu", "cuda" or "cuda:N", checked against the build
// (a program built without the CUDA backend cannot run on a GPU) and the machine, with messages
// that name the flag. Selecting a GPU also makes it the current device, so that kernels and
// copies go to it.
#include <string>

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

}  // namespace txtcls_cli
