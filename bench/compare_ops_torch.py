#!/usr/bin/env python3
"""Times txtcls's CPU ops (bench_ops, Google Benchmark) and PyTorch's on the same shapes and thread
count, in one run, and prints our/their speed ratio (> 1 means txtcls is faster).

    python3 bench/compare_ops_torch.py --bench build/bin/bench_ops --threads 2
"""
import argparse, json, subprocess, time

import torch


def torch_time(fn, min_time=0.5):
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 3:
            return dt / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/bin/bench_ops")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    out = subprocess.run([args.bench, "--threads", str(args.threads), "--benchmark_format=json",
                          f"--benchmark_min_time={args.min_time}"], check=True, capture_output=True, text=True).stdout
    ours = {b["name"]: b["real_time"] / 1e3 for b in json.loads(out)["benchmarks"]}  # ms -> s

    g = torch.Generator().manual_seed(0)
    rows = []
    for name, t in ours.items():
        kind, *dims = name.split("/")
        dims = [int(d.split(":")[-1]) for d in dims if d[0].isdigit() or ":" in d]
        if kind == "BM_matmul":
            M, K, N = dims
            a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
            tt = torch_time(lambda: a @ b, args.min_time)
            extra = f"{2 * M * K * N / t / 1e9:7.1f} vs {2 * M * K * N / tt / 1e9:7.1f} GFLOP/s"
        elif kind == "BM_softmax":
            R, L = dims
            x = torch.randn(R, L, generator=g)
            tt = torch_time(lambda: torch.softmax(x, -1), args.min_time)
            extra = ""
        elif kind == "BM_layer_norm":
            R, D = dims
            x, w, b = torch.randn(R, D, generator=g), torch.randn(D, generator=g), torch.randn(D, generator=g)
            tt = torch_time(lambda: torch.nn.functional.layer_norm(x, (D,), w, b, 1e-5), args.min_time)
            extra = ""
        else:
            continue
        rows.append((name, t, tt, extra))
    print(f"threads={args.threads} torch={torch.__version__}")
    print(f"{'benchmark':34s} {'txtcls ms':>10s} {'torch ms':>10s} {'ratio':>7s}")
    for name, t, tt, extra in rows:
        print(f"{name:34s} {t * 1e3:10.3f} {tt * 1e3:10.3f} {tt / t:7.2f}  {extra}")


if __name__ == "__main__":
    main()
