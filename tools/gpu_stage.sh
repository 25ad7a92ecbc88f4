#!/usr/bin/env bash
# Collects what tools/gpu_check.sh runs from a CUDA build (the test suite, the txtcls program, the
# benchmarks) into one folder, with the shared libraries a bare CUDA machine may lack (Google
# Benchmark, OpenMP's runtime), so that the check can run on a GPU machine that has the CUDA
# toolkit's runtime libraries but not the C++ build dependencies:
#   tools/gpu_stage.sh BUILD_DIR DEST      then, there: TXTCLS_PREBUILT=DEST tools/gpu_check.sh
# Build BUILD_DIR for the target GPU (-DTXTCLS_CUDA_ARCHITECTURES=90 for Hopper, say).
set -euo pipefail
[[ $# == 2 ]] || { echo "usage: $0 BUILD_DIR DEST" >&2; exit 2; }
build=$1 dest=$2
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
cp "$build/tests/test_cuda" "$dest/bin/"
for b in txtcls bench_cuda_kernels bench_cuda_lstm bench_cuda_attention bench_cuda_graph_attention bench_attention; do
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
