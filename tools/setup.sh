#!/usr/bin/env bash
# Installs what txtcls needs on Debian 12 (run as root; idempotent). The CUDA toolkit is used
# when it is already installed (nvcc on PATH or in /usr/local/cuda); it is not installed here.
#   tools/setup.sh            C++ build and test dependencies
#   tools/setup.sh --python   also the Python packages used by tools/ and bench/ (PyTorch, safetensors)
set -euo pipefail

pkgs=(build-essential cmake ccache pkg-config python3
      libeigen3-dev catch2 nlohmann-json3-dev libcli11-dev zlib1g-dev libbenchmark-dev libomp-dev
      clang libclang-rt-14-dev gzip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages already installed"
fi

if [[ "${1:-}" == "--python" ]]; then
  python3 -m pip install -q torch safetensors numpy
fi
