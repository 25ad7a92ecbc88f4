#!/bin/sh
# Builds a host emulation of the tensor-core attention kernels, the XLNet relative attention
# kernels, the BP-Transformer graph attention kernels or the strided indexing kernels and runs its checks against the CPU ops
# (no GPU needed):
#   tools/cuda_emulate/run.sh attention [f16|bf16|tf32|fp32|all] [regs|tiles|all] [case index]
#   tools/cuda_emulate/run.sh relative [case index]
#   tools/cuda_emulate/run.sh graph [quick | case index]
#   tools/cuda_emulate/run.sh indexing
# Needs g++ (C++20) and Eigen, as the library does; python3 for prepare.py. The attention checks
# take about a minute per type and design on two cores, the relative ones under a minute.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${TXTCLS_EMULATE_DIR:-$root/build-emulate}
what=${1:-attention}
[ $# -gt 0 ] && shift
mkdir -p "$out"
flags="-std=c++20 -O1 -pthread -DTXTCLS_WITH_CUDA=1 -I$root/include -I$here -I/usr/include/eigen3 -Wno-unused-result"
# emulate KERNELS CHECK [args]: kernels/KERNELS.cu beside CHECK.cpp (built with the shim
# included first), linked and run.
emulate() {
  kernels=$1 check=$2
  shift 2
  python3 "$here/prepare.py" "$root" "$out" "$kernels.cu"
  g++ $flags -c "$out/$kernels.cpp" -o "$out/$kernels.o" &
  kpid=$!
  g++ $flags -I"$root/tests/cuda" -include "$here/cuda_shim.hpp" -c "$here/$check.cpp" -o "$out/$check.o"
  wait $kpid
  g++ -pthread "$out/$check.o" "$out/$kernels.o" -o "$out/$check"
  exec "$out/$check" "$@"
}
case $what in
attention)
  python3 "$here/prepare.py" "$root" "$out" attention_fa2.cu attention_mma.cu attention.cu
  g++ $flags -c "$out/attention_fa2.cpp" -o "$out/attention_fa2.o" &
  fa2=$!
  g++ $flags -c "$out/attention_mma.cpp" -o "$out/attention_mma.o" &
  mma=$!
  g++ $flags -c "$out/attention.cpp" -o "$out/attention.o" &
  fma=$!
  g++ $flags -I"$root/tests/cuda" -c "$here/check_attention.cpp" -o "$out/check_attention.o"
  wait $fa2
  wait $mma
  wait $fma
  g++ -pthread "$out/check_attention.o" "$out/attention_fa2.o" "$out/attention_mma.o" "$out/attention.o" \
    -o "$out/check_attention"
  exec "$out/check_attention" "$@" ;;
relative)
  # The op's CUDA branch on host tensors (the checks build with the library's headers in their
  # CUDA configuration; host_backend.hpp refuses the backend functions they name).
  emulate relative_attention check_relative "$@" ;;
graph)
  # The same way for the BP-Transformer graph attention, over the CUDA test's own configurations.
  emulate graph_attention check_graph "$@" ;;
indexing)
  # select and compare_scalar on host arrays, against the rule computed directly (a second).
  emulate indexing check_indexing "$@" ;;
*)
  echo "usage: $0 attention [f16|bf16|tf32|fp32|all] [regs|tiles|all] [case] | relative [case] | graph [quick|case] | indexing" >&2
  exit 2 ;;
esac
