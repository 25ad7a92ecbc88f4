#!/usr/bin/env bash
# The GPU check, in one call on a machine with an NVIDIA GPU: build with the CUDA backend, run
# the CUDA test suite, run compute-sanitizer (memcheck, racecheck, synccheck) over it, run the
# kernel and attention benchmarks (and PyTorch's CUDA attention, when installed), and write a
# summary (markdown) for docs/gpu.md.
#   tools/gpu_check.sh [OUT_DIR]          default: gpu_check_out/
# Every step runs even if an earlier one fails; the summary says which passed. Exit status: 0
# only when the build, the tests and every sanitizer pass.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check_out}
build=${TXTCLS_BUILD_DIR:-build-gpu}
mkdir -p "$out"
summary=$out/summary.md
status=0

command -v cmake >/dev/null || tools/setup.sh >"$out/setup.log" 2>&1
export PATH=$PATH:/usr/local/cuda/bin

step() {  # step NAME LOG CMD...: runs CMD, logs its output, records pass/fail
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    echo "| $name | pass | $((SECONDS - t0)) s |" >>"$summary"
    return 0
  fi
  echo "| $name | **FAIL** (see $(basename "$log")) | $((SECONDS - t0)) s |" >>"$summary"
  return 1
}

{
  echo "# GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -1
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPU cores"
  echo '```'
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
} >"$summary"

step build "$out/build.log" bash -c "cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DTXTCLS_CUDA=ON \
  -DTXTCLS_BUILD_TESTS=ON -DTXTCLS_BUILD_BENCH=ON && cmake --build $build -j$(nproc) --target test_cuda \
  bench_cuda_kernels bench_cuda_lstm bench_cuda_attention bench_cuda_graph_attention bench_attention" || status=1

tests=$build/tests/test_cuda
step "CUDA tests (ctest -L cuda)" "$out/tests.log" ctest --test-dir "$build" -L cuda --output-on-failure || status=1
"$tests" --list-test-names-only >"$out/test_names.txt" 2>/dev/null

san=$(command -v compute-sanitizer)
if [[ -n "$san" ]]; then
  step "compute-sanitizer memcheck" "$out/memcheck.log" "$san" --tool memcheck --leak-check full --error-exitcode 1 "$tests" || status=1
  # racecheck and synccheck instrument shared memory and barriers: the kernels that use them.
  step "compute-sanitizer racecheck" "$out/racecheck.log" "$san" --tool racecheck --error-exitcode 1 "$tests" "[reduce],[softmax],[attention_sanitize],[clip]" || status=1
  step "compute-sanitizer synccheck" "$out/synccheck.log" "$san" --tool synccheck --error-exitcode 1 "$tests" "[reduce],[softmax],[attention_sanitize],[clip]" || status=1
else
  echo "| compute-sanitizer | **not found** | |" >>"$summary"
  status=1
fi

step "kernel benchmarks" "$out/bench_kernels.txt" "$build/bin/bench_cuda_kernels" --benchmark_min_time=0.2 || true
step "LSTM benchmarks (ours vs cuDNN)" "$out/bench_lstm.txt" "$build/bin/bench_cuda_lstm" --benchmark_min_time=0.2 || true
# GPU attention: a short shape list (fp32 and bf16, D = 64; the naive path skips L = 4096, whose
# scores do not fit), and PyTorch's CUDA attention on the same shapes when a CUDA build of torch
# is there.
step "GPU attention benchmarks (fused vs naive)" "$out/bench_cuda_attention.txt" "$build/bin/bench_cuda_attention" \
  --benchmark_filter='^attention/(naive|fused)/[^/]+/(fp32|bf16)/D:64/L:(1024|4096)/' --benchmark_min_time=0.1 || true
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  step "GPU attention vs PyTorch" "$out/compare_attention_torch_cuda.txt" python3 bench/compare_attention_torch_cuda.py \
    --bench "$build/bin/bench_cuda_attention" --seqs 1024,4096 --dims 64 --modes fp32,bf16 --min-time 0.1 || true
fi
# BPT graph attention against dense attention on the GPU, two lengths (the scaling at a glance).
step "GPU BPT graph attention benchmarks" "$out/bench_cuda_graph_attention.txt" "$build/bin/bench_cuda_graph_attention" \
  --benchmark_filter='^gpu/(bpt|dense)/[^/]+/n:(1024|8192)/' --benchmark_min_time=0.1 || true
step "attention benchmarks (CPU side)" "$out/bench_attention.txt" "$build/bin/bench_attention" \
  --benchmark_filter='^sdpa/fused/.*/L:(512|1024)/' --benchmark_min_time=0.2 || true

{
  echo
  echo "## Kernel benchmarks"
  echo
  echo '```'
  grep -E "bandwidth|^BM_|^Benchmark|^-" "$out/bench_kernels.txt" 2>/dev/null
  grep -E "^BM_|^Benchmark|^-" "$out/bench_lstm.txt" 2>/dev/null
  grep -E "^attention/|^Benchmark|^-" "$out/bench_cuda_attention.txt" 2>/dev/null
  grep -E "^gpu/|^Benchmark|^-" "$out/bench_cuda_graph_attention.txt" 2>/dev/null
  tail -n +2 "$out/compare_attention_torch_cuda.txt" 2>/dev/null
  echo '```'
  echo
  echo "## Failures"
  echo
  grep -h -E "FAILED|REQUIRE|with expansion|ERROR SUMMARY: [1-9]|Error" "$out"/tests.log "$out"/*check.log 2>/dev/null | head -40
} >>"$summary"
cat "$summary"
exit $status
