#!/usr/bin/env bash
# Collects what tools/gpu_check.sh runs from a CUDA build (the test suite, the txtcls program, the
# benchmarks) into one folder, with the shared libraries a bare CUDA machine may lack (Google
# Benchmark, OpenMP's runtime), so that the check can run on a GPU machine that has the CUDA
# toolkit's runtime libraries but not the C++ build dependencies:
#   tools/gpu_stage.sh BUILD_DIR DEST      then, there: TXTCLS_PREBUILT=DEST tools/gpu_check.sh
# Build BUILD_DIR for the target GPU (-DTXTCLS_CUDA_ARCHITECTURES=90 for Hopper, say) and for
# any x86-64 CPU with AVX2 (-DTXTCLS_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3): code built
# with -march=native on an AVX-512 machine dies of an illegal instruction on a CPU without it.
set -euo pipefail
[[ $# == 2 ]] || { echo "usage: $0 BUILD_DIR DEST" >&2; exit 2; }
build=$1 dest=$2
if grep -q '^TXTCLS_NATIVE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "$0: $build was configured with TXTCLS_NATIVE=ON (-march=native): its binaries may not run on" \
    "another machine's CPU; reconfigure it with -DTXTCLS_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
cp "$build/tests/test_cuda" "$dest/bin/"
for b in txtcls bench_cuda_kernels bench_cuda_lstm bench_cuda_attention bench_cuda_graph_attention bench_cuda_relative_attention bench_attention; do
  cp "$build/bin/$b" "$dest/bin/"
done
# The C library, the compiler's runtime and the CUDA libraries come from the target machine.
system='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libstdc\+\+|libgcc_s|libcud|libcublas)'
for b in "$dest"/bin/*; do
  ldd "$b" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $system ]] || cp -L "$path" "$dest/lib/$name"
done
du -sh "$dest"
ls "$dest/lib"
