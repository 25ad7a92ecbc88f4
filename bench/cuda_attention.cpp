// GPU attention benchmark (Google Benchmark, manual timing with CUDA events): the fused op
// (scaled_dot_product_attention on CUDA tensors) against the naive composition it replaces
// (matmul, scale, masked softmax, matmul: the [B, H, L, L] scores stored), batch 32 x 8 heads,
// head dim 64 and 128, L = 128 ... 8192, causal or not, forward alone and forward + backward.
// TFLOP/s as FlashAttention counts them: 4*B*H*L*L*D forward, 2.5x for the backward alone, 3.5x
// for forward + backward, halved when causal. Without a GPU it says so and exits 0.
//   build/bin/bench_cuda_attention [--benchmark_filter=fused/fwd/fp32/D:64] [--benchmark_format=json]
// Names: attention/<naive|fused|tiles>/<fwd|fwd+bwd>/<fp32|tf32|bf16|fp16>/D:<d>/L:<l>/causal:<0|1>.
// On tensor cores (tf32, bf16, fp16) "fused" is the default register-resident kernel
// (attention_fa2.cu) and "tiles" the first, shared-tile design (attention_mma.cu;
// cuda::set_attention_mma_kernel).
// tf32 turns on cuda::set_allow_tf32: the naive path's cuBLAS GEMMs and the fused kernels run on
// tensor cores. bf16 and fp16 run the raw 16-bit API (cuda::attention_forward_half; fused only:
// there are no 16-bit tensor ops for a naive path).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "cuda_timing.hpp"
#include "txtcls/io/half.hpp"
#include "txtcls/cuda/attention.hpp"
#include "txtcls/cuda/blas.hpp"
#include "txtcls/cuda/runtime.hpp"
#include "txtcls/ops/attention.hpp"

using namespace txtcls;

namespace {

constexpr int64_t kBatch = 32, kHeads = 8;
// The naive path stores the scores (and their gradient): skipped above this many bytes of them.
constexpr double kNaiveMaxScoreBytes = 8.0 * (int64_t(1) << 30);

enum class Mode { Fp32, Tf32, Bf16, Fp16 };
const char* mode_name(Mode m) {
  return m == Mode::Fp32 ? "fp32" : m == Mode::Tf32 ? "tf32" : m == Mode::Bf16 ? "bf16" : "fp16";
}

struct Case {
  bool fused, backward;
  bool tiles;  // 16-bit only: the shared-tile kernel instead of the register-resident one
  Mode mode;
  bool causal;
  int64_t D, L;
};

double flops(const Case& c) {
  const double fwd = 4.0 * kBatch * kHeads * double(c.L) * double(c.L) * double(c.D);
  return fwd * (c.backward ? 3.5 : 1.0) * (c.causal ? 0.5 : 1.0);
}

// Raw device memory for the 16-bit path (the Tensor class has no 16-bit element type).
struct DeviceBuf {
  void* p = nullptr;
  explicit DeviceBuf(size_t bytes) {
    if (cudaMalloc(&p, std::max<size_t>(bytes, 1)) != cudaSuccess) p = nullptr;
  }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  ~DeviceBuf() { cudaFree(p); }
};

void run_half(benchmark::State& state, const Case& c) {
  if (!cuda::attention_has_tensor_cores()) {
    state.SkipWithError("16-bit attention needs a device and a build of compute capability 8.0 or more");
    return;
  }
  const int64_t B = kBatch, H = kHeads, L = c.L, D = c.D, n = B * H * L * D;
  const cuda::AttnHalf t = c.mode == Mode::Bf16 ? cuda::AttnHalf::BF16 : cuda::AttnHalf::F16;
  // One buffer of values in [-1, 1] serves as q, k, v and dO (the values do not change the time).
  std::vector<uint16_t> host(static_cast<size_t>(n));
  Generator g(3);
  std::vector<float> pattern = rand_uniform<float>({4099}, g, -1, 1).to_vector();
  for (size_t i = 0; i < host.size(); ++i) {
    const float x = pattern[i % pattern.size()];
    host[i] = t == cuda::AttnHalf::BF16 ? half::float_to_bf16(x) : half::float_to_f16(x);
  }
  DeviceBuf x(n * 2), out(n * 2), dq(n * 2), dk(n * 2), dv(n * 2), lse(B * H * L * 4), delta(B * H * L * 4);
  if (!x.p || !out.p || !dq.p || !dk.p || !dv.p || !lse.p || !delta.p) {
    state.SkipWithError("out of device memory");
    return;
  }
  cudaMemcpy(x.p, host.data(), host.size() * 2, cudaMemcpyHostToDevice);
  cuda::AttentionHalfArgs a;
  a.opts.B = B, a.opts.H = H, a.opts.Lq = L, a.opts.Lk = L, a.opts.D = D, a.opts.Dv = D;
  a.opts.scale = 1.0f / std::sqrt(float(D));
  a.opts.causal = c.causal;
  a.dtype = t;
  const cuda::AttnRows<const void> rows{x.p, H * L * D, L * D, D};
  a.q = a.k = a.v = rows;
  cuda::AttentionHalfGrads gr;
  gr.dq = dq.p, gr.dk = dk.p, gr.dv = dv.p, gr.delta = static_cast<float*>(delta.p);
  const cuda::AttnMmaKernel prev = cuda::attention_mma_kernel();
  cuda::set_attention_mma_kernel(c.tiles ? cuda::AttnMmaKernel::SharedTiles : cuda::AttnMmaKernel::Registers);
  txtcls::bench::time_gpu_events(state, [&] {
    cuda::attention_forward_half(a, out.p, static_cast<float*>(lse.p));
    if (c.backward) cuda::attention_backward_half(a, out.p, rows, static_cast<const float*>(lse.p), gr);
  });
  cuda::set_attention_mma_kernel(prev);
  state.counters["TFLOP/s"] = benchmark::Counter(flops(c) / 1e12, benchmark::Counter::kIsIterationInvariantRate);
}

void run(benchmark::State& state, Case c) {
  if (c.mode == Mode::Bf16 || c.mode == Mode::Fp16) return run_half(state, c);
  const Device dev = Device::cuda(0);
  const int64_t B = kBatch, H = kHeads, L = c.L, D = c.D;
  if (!c.fused && double(B * H) * double(L * L) * 4.0 > kNaiveMaxScoreBytes) {
    state.SkipWithError("naive: the [B, H, L, L] scores would not fit in memory");
    return;
  }
  cuda::set_allow_tf32(c.mode == Mode::Tf32);
  const cuda::AttnMmaKernel prev = cuda::attention_mma_kernel();
  cuda::set_attention_mma_kernel(c.tiles ? cuda::AttnMmaKernel::SharedTiles : cuda::AttnMmaKernel::Registers);
  Generator g(3);
  auto input = [&] { return rand_uniform<float>({B, H, L, D}, g, -1, 1, dev); };
  Tensor<float> q = input(), k = input(), v = input(), go = input();
  if (c.backward) q.set_requires_grad(), k.set_requires_grad(), v.set_requires_grad();
  Tensor<float> causal_mask;
  if (c.causal && !c.fused) {  // built once, on the GPU, as a caller of the naive path would keep it
    std::vector<float> m(static_cast<size_t>(L * L), 0.0f);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = i + 1; j < L; ++j) m[i * L + j] = -std::numeric_limits<float>::infinity();
    causal_mask = from_vector<float>(m, {L, L}).to(dev);
  }
  const float scale = 1.0f / std::sqrt(float(D));
  auto forward = [&]() -> Tensor<float> {
    if (c.fused) {
      AttentionOptions<float> o;
      o.causal = c.causal;
      return scaled_dot_product_attention(q, k, v, o);
    }
    Tensor<float> s = mul(matmul(q, k.transpose(-1, -2)), scale);
    return matmul(softmax(s, -1, causal_mask), v);
  };
  txtcls::bench::time_gpu_events(state, [&] {
    Tensor<float> y = forward();
    if (c.backward) y.backward(go);
    benchmark::DoNotOptimize(y);
  });
  cuda::set_allow_tf32(false);
  cuda::set_attention_mma_kernel(prev);
  state.counters["TFLOP/s"] = benchmark::Counter(flops(c) / 1e12, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  for (bool backward : {false, true})
    for (Mode mode : {Mode::Fp32, Mode::Tf32, Mode::Bf16, Mode::Fp16})
      for (int64_t D : {64, 128})
        for (int64_t L : {128, 256, 512, 1024, 2048, 4096, 8192})
          for (bool causal : {false, true})
            for (const char* impl : {"naive", "fused", "tiles"}) {
              const bool fused = impl[0] != 'n', tiles = impl[0] == 't', half = mode == Mode::Bf16 || mode == Mode::Fp16;
              if (half && !fused) continue;                    // no naive 16-bit path
              if (tiles && !half && mode != Mode::Tf32) continue;  // two designs on tensor cores only
              const Case c{fused, backward, tiles, mode, causal, D, L};
              const std::string name = std::string("attention/") + impl + "/" +
                                       (backward ? "fwd+bwd" : "fwd") + "/" + mode_name(mode) +
                                       "/D:" + std::to_string(D) + "/L:" + std::to_string(L) +
                                       "/causal:" + (causal ? "1" : "0");
              benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& s) { run(s, c); })
                  ->UseManualTime()
                  ->Unit(benchmark::kMillisecond);
            }
}

}  // namespace

int main(int argc, char** argv) { return txtcls::bench::gpu_benchmark_main(argc, argv, register_all); }
