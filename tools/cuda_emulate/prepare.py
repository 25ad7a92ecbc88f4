#!/usr/bin/env python3
"""Rewrites kernel sources (kernels/*.cu) into host C++ for the emulation in this folder:
launches `k<<<grid, block, smem, stream>>>(args)` become `emu_launch(k, grid, block, smem, stream, args)`,
dynamic shared memory becomes the emulator's buffer, CUDA headers give way to cuda_shim.hpp and
warp_mma.cuh to its emulation (warp_mma.hpp).

    prepare.py SOURCE_DIR OUT_DIR attention_fa2.cu attention_mma.cu
"""
import os
import re
import sys


def prepare(text, kernels_dir):
    # The shim first: device headers (geometry.cuh) may come before launch.cuh.
    text = '#include "cuda_shim.hpp"\n' + text.replace('#include "launch.cuh"\n', '#include "cuda_shim.hpp"\n')
    text = text.replace('#include "warp_mma.cuh"\n', '#include "warp_mma.hpp"\n')
    text = re.sub(r'#include "(\w+\.cuh)"', lambda m: f'#include "{os.path.join(kernels_dir, m.group(1))}"', text)
    for h in ("<cuda_bf16.h>", "<cuda_fp16.h>", "<mma.h>"):
        text = text.replace(f"#include {h}\n", "")
    text = text.replace("#include <cmath>", '#include "cuda_shim.hpp"\n#include <cmath>', 1)
    text = re.sub(r"(\w+(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\(", lambda m: f"emu_launch({m.group(1)}, {m.group(2)}, ", text,
                  flags=re.S)
    return re.sub(r"extern __shared__ (__align__\(\d+\) )?unsigned char (\w+)\[\];",
                  r"unsigned char* \2 = g_smem;", text)


def main():
    src, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    kernels_dir = os.path.abspath(os.path.join(src, "kernels"))
    for name in names:
        with open(os.path.join(kernels_dir, name)) as f:
            text = prepare(f.read(), kernels_dir)
        with open(os.path.join(out, name.replace(".cu", ".cpp")), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
