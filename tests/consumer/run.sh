#!/usr/bin/env bash
# Builds tests/consumer against txtcls both ways (add_subdirectory, and find_package after
# cmake --install), runs the README example each time, and checks that the README shows the
# example verbatim.   run.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

# The README's example block must be the file that is compiled here.
python3 - "$src/README.md" "$src/tests/consumer/readme_example.cpp" <<'PY'
import sys, re
readme, example = open(sys.argv[1]).read(), open(sys.argv[2]).read()
blocks = re.findall(r"```cpp\n(.*?)```", readme, re.S)
if example not in blocks:
    sys.exit("README.md does not contain tests/consumer/readme_example.cpp verbatim in a ```cpp block")
PY

cmake -S "$src/tests/consumer" -B "$work/sub" -DTXTCLS_CONSUME=subdirectory -DTXTCLS_SOURCE="$src" "${launcher[@]}" >/dev/null
cmake --build "$work/sub" -j2 >/dev/null
"$work/sub/readme_example"

cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/tests/consumer" -B "$work/pkg" -DTXTCLS_CONSUME=package -DCMAKE_PREFIX_PATH="$work/prefix" "${launcher[@]}" >/dev/null
cmake --build "$work/pkg" -j2 >/dev/null
"$work/pkg/readme_example"
echo "consumer: add_subdirectory and find_package builds OK"
