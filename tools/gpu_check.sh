#!/usr/bin/env bash
# The GPU check, in one call on a machine with an NVIDIA GPU: build with the CUDA backend (or take
# binaries built elsewhere), run the CUDA test suite, run compute-sanitizer (memcheck, racecheck,
# synccheck) over it, train LSTM_reg on data/trec on the GPU (three seeds side by side), run the
# kernel and attention benchmarks (and PyTorch's CUDA attention on the same shapes, when a CUDA
# build of torch is installed), and write a summary (markdown) for docs/gpu.md.
#   tools/gpu_check.sh [OUT_DIR]          default: gpu_check_out/
# Environment:
#   TXTCLS_BUILD_DIR=DIR   build there (default build-gpu)
#   TXTCLS_PREBUILT=DIR    skip the build and run the binaries that tools/gpu_stage.sh put in DIR
#                          (for a GPU machine without the C++ build dependencies)
#   TXTCLS_GPU_QUICK=1     shorter benchmarks and sanitizer runs on a subset (a time-boxed check)
#   TXTCLS_GPU_STEPS=LIST  only these steps (comma-separated; default all): tests, train, memcheck,
#                          racecheck, synccheck, kernels, lstm, attention, attention8k, relative, graph
#   TXTCLS_GPU_LIMIT=S     time limit of each correctness step in the quick check (default 240 s)
#   TXTCLS_GPU_SYNC_FILTER=TAGS  the test cases racecheck and synccheck run (default below)
#   TXTCLS_GPU_ATTN_MODES=LIST, TXTCLS_GPU_ATTN_IMPLS=LIST  precisions (fp32,tf32,bf16,fp16) and
#                          designs (naive,fused,tiles) of the attention comparison (default all)
# Every step runs, under its own time limit, even if an earlier one fails; the summary says which
# passed. Exit status: 0 only when the build, the tests and every sanitizer pass.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.md
status=0
quick=${TXTCLS_GPU_QUICK:-0}
steps_wanted=,${TXTCLS_GPU_STEPS:-tests,train,memcheck,racecheck,synccheck,kernels,lstm,attention,attention8k,relative,graph},
wanted() { [[ $steps_wanted == *,$1,* ]]; }
export PATH=$PATH:/usr/local/cuda/bin

step() {  # step NAME LOG SECONDS CMD...: runs CMD under a time limit, logs it, records the result
  local name=$1 log=$2 limit=$3
  shift 3
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  if ((rc == 0)); then
    echo "| $name | pass | $took s |" >>"$summary"
  elif ((rc == 124 || rc == 137)); then
    echo "| $name | **time limit ($limit s)** (see $(basename "$log")) | $took s |" >>"$summary"
  else
    echo "| $name | **FAIL** (exit $rc, see $(basename "$log")) | $took s |" >>"$summary"
  fi
  return $rc
}

if [[ -n "${TXTCLS_PREBUILT:-}" ]]; then
  staged=$(cd "$TXTCLS_PREBUILT" && pwd)
  bin=$staged/bin
  # The staged binaries link the CUDA toolkit's shared libraries; take them from the toolkit or,
  # for cuDNN, from the Python wheels that a CUDA build of PyTorch brings.
  libdirs=$staged/lib
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9; do
    found=$(find /usr/local/cuda/ /usr/local/cuda/lib64/ /usr/lib/x86_64-linux-gnu/ /opt/ /usr/local/lib/ \
      -name "$lib" 2>/dev/null | head -1)
    [[ -n "$found" ]] && libdirs=$libdirs:$(dirname "$found")
  done
  export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  command -v cmake >/dev/null || tools/setup.sh >"$out/setup.log" 2>&1
  build=${TXTCLS_BUILD_DIR:-build-gpu}
  bin=$build/bin
fi

{
  echo "# GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -1
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPU cores," \
    "${TXTCLS_PREBUILT:+binaries built elsewhere (sm_90), }quick=$quick"
  echo '```'
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
} >"$summary"

if [[ -z "${TXTCLS_PREBUILT:-}" ]]; then
  step build "$out/build.log" 3000 bash -c "cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DTXTCLS_CUDA=ON \
    -DTXTCLS_BUILD_TESTS=ON -DTXTCLS_BUILD_BENCH=ON && cmake --build $build -j$(nproc) --target test_cuda txtcls_cli \
    bench_cuda_kernels bench_cuda_lstm bench_cuda_attention bench_cuda_graph_attention bench_attention &&
    mkdir -p $bin && cp $build/tests/test_cuda $bin/" || status=1
else
  for b in "$bin"/*; do ldd "$b" | grep "not found"; done >"$out/ldd.log" 2>&1
  [[ -s "$out/ldd.log" ]] && { echo "| shared libraries | **missing** (see ldd.log) | |" >>"$summary"; status=1; }
fi

tests=$bin/test_cuda
"$tests" --list-test-names-only >"$out/test_names.txt" 2>/dev/null

# LSTM_reg on data/trec on the GPU, hedwig's recipe, three seeds at once (the GPU is far from
# full with one): their test accuracy is compared with the CPU runs of docs/results.md.
train_one() {
  "$bin/txtcls" train --model lstm_reg --data data/trec --device cuda --seed "$1" --threads 4 \
    --out "$out/trec_seed$1" >"$out/train_seed$1.log" 2>&1
}
train_three() {
  local rc=0
  train_one 3435 & train_one 1 & train_one 2 &
  for _ in 1 2 3; do wait -n || rc=1; done
  for s in 3435 1 2; do
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); t=m['test']
print(f'seed {sys.argv[2]}: test accuracy {t[\"accuracy\"]:.4f}, macro-F1 {t[\"macro_f1\"]:.4f}, epochs {m.get(\"epochs_run\")}')" \
      "$out/trec_seed$s/metrics.json" "$s" || rc=1
    grep -E "^epoch" "$out/train_seed$s.log" | tail -1
  done
  return $rc
}
export -f train_one train_three
export bin out

# The sanitizers run the kernels 10-100x slower. memcheck takes the whole suite, or in the quick
# check everything but the long parity sweeps (one small attention case per type stays in);
# racecheck and synccheck instrument shared memory and barriers: the kernels that use them.
sync_filter=${TXTCLS_GPU_SYNC_FILTER:-'[reduce],[softmax],[attention_sanitize],[attention_half_sanitize],[relative_attention_sanitize],[lstm_sanitize],[clip],[graph_attention],[indexing],[optim],[embedding],[pooling],[loss],[norm],[dropout]'}
san=$(command -v compute-sanitizer)
[[ -z "$san" ]] && { echo "| compute-sanitizer | **not found** | |" >>"$summary"; status=1; }
mem_filter=''
[[ $quick == 1 ]] && mem_filter='~[train]~[attention]~[relative_attention]~[lstm],[attention_sanitize],[attention_half_sanitize],[relative_attention_sanitize]'
# KEY|NAME|LOG|SECONDS (full check)|SECONDS (quick)|COMMAND for each correctness step.
limit=${TXTCLS_GPU_LIMIT:-240}
all_steps=("tests|CUDA tests (test_cuda)|tests.log|1200|$limit|$tests --durations yes"
  "train|LSTM_reg on data/trec, --device cuda, seeds 3435/1/2|train.log|1200|$((limit > 300 ? limit : 300))|bash -c train_three")
[[ -n "$san" ]] && all_steps+=(
  "memcheck|compute-sanitizer memcheck${mem_filter:+ ($mem_filter)}|memcheck.log|3600|$limit|$san --tool memcheck --leak-check full --error-exitcode 1 $tests ${mem_filter:-}"
  "racecheck|compute-sanitizer racecheck ($sync_filter)|racecheck.log|1200|$limit|$san --tool racecheck --error-exitcode 1 $tests $sync_filter"
  "synccheck|compute-sanitizer synccheck ($sync_filter)|synccheck.log|1200|$limit|$san --tool synccheck --error-exitcode 1 $tests $sync_filter")
steps=()
for st in "${all_steps[@]}"; do wanted "${st%%|*}" && steps+=("${st#*|}"); done
run_step() {
  local name log full short cmd
  IFS='|' read -r name log full short cmd <<<"$1"
  read -r -a argv <<<"$cmd"  # no argument of these commands holds a space
  step "$name" "$out/$log" $((quick == 1 ? short : full)) "${argv[@]}"
}
if [[ $quick == 1 ]]; then
  # Time-boxed: the correctness steps run at once (16 cores and one GPU are plenty for them; their
  # timing does not matter), then the benchmarks alone on the machine.
  pids=()
  for st in "${steps[@]}"; do run_step "$st" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
else
  for st in "${steps[@]}"; do run_step "$st" || status=1; done
fi

mt=0.2; [[ $quick == 1 ]] && mt=0.05
# Console output for the summary, JSON for the PyTorch comparison below (which then does not
# run them again).
wanted kernels && step "kernel benchmarks" "$out/bench_kernels.txt" 300 "$bin/bench_cuda_kernels" --benchmark_min_time=$mt \
  --benchmark_out="$out/bench_kernels.json" --benchmark_out_format=json || true
wanted lstm && step "LSTM benchmarks (ours vs cuDNN)" "$out/bench_lstm.txt" 300 "$bin/bench_cuda_lstm" --benchmark_min_time=$mt \
  --benchmark_out="$out/bench_lstm.json" --benchmark_out_format=json || true
# GPU attention against PyTorch's CUDA SDPA on the same shapes (the script runs our benchmark
# itself: naive and fused), every precision at L = 512 and 2048, and bf16 up to L = 8192.
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  modes=${TXTCLS_GPU_ATTN_MODES:-fp32,tf32,bf16,fp16} impls=${TXTCLS_GPU_ATTN_IMPLS:-naive,fused,tiles}
  wanted attention && step "GPU attention vs PyTorch (L 512, 2048)" "$out/compare_attention_torch_cuda.txt" 300 \
    python3 bench/compare_attention_torch_cuda.py --bench "$bin/bench_cuda_attention" --seqs 512,2048 \
    --dims 64,128 --modes "$modes" --impls "$impls" --min-time $mt || true
  wanted kernels && wanted lstm && step "GPU kernels and LSTM vs PyTorch" "$out/compare_kernels_torch_cuda.txt" 200 \
    python3 bench/compare_kernels_torch_cuda.py --kernels-json "$out/bench_kernels.json" \
    --lstm-json "$out/bench_lstm.json" --min-time $mt || true
  wanted attention8k && step "GPU attention vs PyTorch (bf16, L 8192)" "$out/compare_attention_torch_cuda_8k.txt" 200 \
    python3 bench/compare_attention_torch_cuda.py --bench "$bin/bench_cuda_attention" --seqs 8192 \
    --dims 64,128 --modes bf16 --impls "$impls" --min-time $mt || true
  wanted relative && step "GPU relative attention vs PyTorch (XLNet core)" "$out/compare_relative_torch_cuda.txt" 200 \
    python3 bench/compare_relative_torch_cuda.py --bench "$bin/bench_cuda_relative_attention" --seqs 512,2048 \
    --min-time $mt || true
else
  wanted attention && step "GPU attention benchmarks (fused vs naive)" "$out/bench_cuda_attention.txt" 300 "$bin/bench_cuda_attention" \
    --benchmark_filter='^attention/(naive|fused|tiles)/[^/]+/(fp32|tf32|bf16)/D:64/L:(1024|4096)/' --benchmark_min_time=$mt || true
  wanted relative && step "GPU relative attention benchmarks (fused vs unfused)" \
    "$out/bench_cuda_relative_attention.txt" 200 "$bin/bench_cuda_relative_attention" \
    --benchmark_filter='/L:(512|2048)/' --benchmark_min_time=$mt || true
fi
# BPT graph attention against dense attention on the GPU, two lengths (the scaling at a glance).
wanted graph && step "GPU BPT graph attention benchmarks" "$out/bench_cuda_graph_attention.txt" 200 "$bin/bench_cuda_graph_attention" \
  --benchmark_filter='^gpu/(bpt|dense)/[^/]+/n:(1024|8192)/' --benchmark_min_time=$mt || true

{
  echo
  echo "## LSTM_reg on data/trec, GPU"
  echo
  echo '```'
  cat "$out/train.log" 2>/dev/null
  echo '```'
  echo
  echo "## Benchmarks"
  echo
  echo '```'
  grep -E "bandwidth|^BM_|^Benchmark|^-" "$out/bench_kernels.txt" 2>/dev/null
  grep -E "^BM_|^Benchmark|^-" "$out/bench_lstm.txt" 2>/dev/null
  grep -E "^attention/|^Benchmark|^-" "$out/bench_cuda_attention.txt" 2>/dev/null
  grep -E "^gpu/|^Benchmark|^-" "$out/bench_cuda_graph_attention.txt" 2>/dev/null
  grep -E "^relattn/|^Benchmark|^-" "$out/bench_cuda_relative_attention.txt" 2>/dev/null
  tail -n +2 "$out/compare_attention_torch_cuda.txt" 2>/dev/null
  tail -n +3 "$out/compare_attention_torch_cuda_8k.txt" 2>/dev/null
  cat "$out/compare_relative_torch_cuda.txt" 2>/dev/null
  cat "$out/compare_kernels_torch_cuda.txt" 2>/dev/null
  echo '```'
  echo
  echo "## Failures"
  echo
  grep -h -E "FAILED|REQUIRE|with expansion|ERROR SUMMARY: [1-9]|Error|test cases" "$out"/tests.log "$out"/*check.log 2>/dev/null | head -60
} >>"$summary"
cat "$summary"
exit $status
