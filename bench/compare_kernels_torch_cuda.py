#!/usr/bin/env python3
"""Times txtcls's GPU kernels (bench_cuda_kernels) and GPU LSTM (bench_cuda_lstm) and PyTorch's
CUDA ops on the same shapes, in one run, and prints the ratio torch time / txtcls time (> 1:
txtcls faster). Shapes are those of the two benchmarks: 64M-float elementwise and reduction
passes, softmax rows of 128..8192 over 16M floats, one Adam step over LSTM_reg's parameters
(torch with fused=True), 4096^3 GEMMs (FP32, TF32, FP64), and one bidirectional LSTM layer (300
-> 512, batch 32, T 128 and 512; torch's nn.LSTM runs cuDNN), forward and forward + backward.

    python3 bench/compare_kernels_torch_cuda.py --kernels build/bin/bench_cuda_kernels \\
        --lstm build/bin/bench_cuda_lstm --min-time 0.2

Both sides are timed with CUDA events around the same work; the best of --rounds is kept.
Needs a CUDA build of PyTorch.
"""
import argparse
import json
import re
import subprocess

import torch
from torch_timing import torch_time

BIG = 1 << 26


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="build/bin/bench_cuda_kernels")
    ap.add_argument("--lstm", default="build/bin/bench_cuda_lstm")
    ap.add_argument("--kernels-json", help="results bench_cuda_kernels already wrote (--benchmark_out): not rerun")
    ap.add_argument("--lstm-json", help="results bench_cuda_lstm already wrote (--benchmark_out): not rerun")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=1)
    return ap.parse_args()


def rand(*shape, dtype=torch.float32):
    return torch.rand(*shape, device="cuda", dtype=dtype) * 2 - 1


def torch_kernels():
    """name (as bench_cuda_kernels calls it) -> a function doing the same work in torch."""
    cases = {}
    x, y = rand(BIG), torch.empty(BIG, device="cuda")
    cases[f"BM_copy/{BIG}"] = lambda: y.copy_(x)
    cases[f"BM_exp/{BIG}"] = lambda: torch.exp(x)
    xs = rand(1 << 20)
    cases["BM_exp/1048576"] = lambda: torch.exp(xs)
    m, bias = rand(BIG // 1024, 1024), rand(1024)
    cases[f"BM_add_broadcast/{BIG}"] = lambda: m + bias
    xt, yt = rand(1024, BIG // 1024), rand(BIG // 1024, 1024)
    cases[f"BM_add_transposed/{BIG}"] = lambda: xt.t() + yt
    r = rand(BIG // 4096, 4096)
    cases[f"BM_sum_rows/{BIG}"] = lambda: r.sum(1)
    cases[f"BM_sum_columns/{BIG}"] = lambda: m.sum(0)
    cases[f"BM_sum_all/{BIG}"] = lambda: x.sum()
    for L in (128, 512, 2048, 8192):
        s = rand((1 << 24) // L, L)
        cases[f"BM_softmax/{L}"] = (lambda s_: lambda: torch.softmax(s_, -1))(s)
    shapes = [(9000, 300), (2048, 300), (2048, 512), (2048,), (2048,), (2048, 300), (2048, 512), (2048,), (2048,),
              (6, 1024), (6,)]
    ps = [torch.nn.Parameter(rand(*s)) for s in shapes]
    for p in ps:
        p.grad = rand(*p.shape)
    opt = torch.optim.Adam(ps, lr=1e-3, fused=True)
    cases["BM_adam"] = opt.step
    a32, b32 = rand(4096, 4096), rand(4096, 4096)
    a64, b64 = a32.double(), b32.double()
    cases["BM_gemm/4096/0"] = ("fp32", lambda: a32 @ b32)
    cases["BM_gemm/4096/1"] = ("tf32", lambda: a32 @ b32)
    cases["BM_gemm/4096/2"] = ("fp64", lambda: a64 @ b64)
    return cases


def torch_lstm(T, backward):
    lstm = torch.nn.LSTM(300, 512, batch_first=True, bidirectional=True).cuda()
    x = rand(32, T, 300).requires_grad_()
    g = rand(32, T, 1024)

    def step():
        out, _ = lstm(x)
        if backward:
            out.backward(g)
    return step


def ours(binary, min_time, saved=None):
    """Our times by benchmark name: from `saved` (a --benchmark_out JSON file) when given, else a run."""
    if saved:
        with open(saved) as f:
            out = f.read()
    else:
        out = subprocess.run([binary, "--benchmark_format=json", f"--benchmark_min_time={min_time}"], check=True,
                             capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out[out.index("{"):])["benchmarks"]:
        if b.get("error_occurred"):
            continue
        name = b["name"].replace("/manual_time", "")
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
        res[name] = b["real_time"] * unit
    return res


def main():
    args = parse_args()
    best = {}

    def keep(key, t):
        best[key] = min(best.get(key, float("inf")), t)

    for _ in range(args.rounds):
        for k, t in ours(args.kernels, args.min_time, args.kernels_json).items():
            keep(("ours", k), t)
        for k, t in ours(args.lstm, args.min_time, args.lstm_json).items():
            keep(("ours", k), t)
        for k, fn in torch_kernels().items():
            if isinstance(fn, tuple):
                mode, fn = fn
                torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
            keep(("torch", k), torch_time(fn, args.min_time, 3))
            torch.backends.cuda.matmul.allow_tf32 = False
        for T in (128, 512):
            for bwd in (0, 1):
                keep(("torch", f"BM_bilstm/T:{T}/bwd:{bwd}"), torch_time(torch_lstm(T, bwd), args.min_time, 3))

    print(f"torch={torch.__version__} {torch.cuda.get_device_name()} rounds={args.rounds} (best of rounds)")
    print(f"{'case':<34} {'txtcls ms':>10} {'torch ms':>10} {'torch/txtcls':>12}")
    for (side, k) in sorted(best):
        if side != "ours":
            continue
        # LSTM rows: the own kernels (cudnn:0) and cuDNN through txtcls (cudnn:1) against torch.
        mine, theirs = best[("ours", k)], best.get(("torch", re.sub(r"/cudnn:\d", "", k)))
        ratio = f"{theirs / mine:12.2f}" if theirs else f"{'-':>12}"
        tt = f"{theirs * 1e3:10.3f}" if theirs else f"{'-':>10}"
        print(f"{k:<34} {mine * 1e3:10.3f} {tt} {ratio}")


if __name__ == "__main__":
    main()
