#!/bin/sh
# Builds the host emulation of the tensor-core attention kernels (16-bit and TF32) and runs its
# checks (no GPU needed):
#   tools/cuda_emulate/run.sh [f16|bf16|tf32|all] [regs|tiles|all] [case index]
# Needs g++ (C++20) and Eigen, as the library does; python3 for prepare.py. About a minute per
# type and kernel on two cores.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${TXTCLS_EMULATE_DIR:-$root/build-emulate}
mkdir -p "$out"
python3 "$here/prepare.py" "$root" "$out" attention_fa2.cu attention_mma.cu attention.cu
flags="-std=c++20 -O1 -pthread -I$root/include -I$here -I/usr/include/eigen3 -Wno-unused-result"
g++ $flags -c "$out/attention_fa2.cpp" -o "$out/attention_fa2.o" &
fa2=$!
g++ $flags -c "$out/attention_mma.cpp" -o "$out/attention_mma.o" &
mma=$!
g++ $flags -c "$out/attention.cpp" -o "$out/attention.o" &
fma=$!
g++ $flags -c "$here/check_attention.cpp" -o "$out/check_attention.o"
wait $fa2
wait $mma
wait $fma
g++ -pthread "$out/check_attention.o" "$out/attention_fa2.o" "$out/attention_mma.o" "$out/attention.o" -o "$out/check_attention"
exec "$out/check_attention" "$@"
