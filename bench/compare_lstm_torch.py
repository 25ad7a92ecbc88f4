#!/usr/bin/env python3
"""Training throughput of txtcls's LSTM (bench_lstm) against PyTorch's on the same configurations
and thread count, in one run: a bidirectional LSTM (hidden 512) over 300-d inputs, batch 32,
float32; one iteration = forward, backward of a fixed random weighting of the padded output, and
an Adam step. PyTorch runs nn.LSTM(batch_first=True, bidirectional=True) on packed sequences
(pack_padded_sequence / pad_packed_sequence), the way hedwig's reg_lstm feeds it.

The two are timed alternately for several rounds and the best time of each is kept, so that a
busy machine penalises both alike. Prints tokens/s and our/their ratio (> 1: txtcls is faster).

    python3 bench/compare_lstm_torch.py --bench build/bin/bench_lstm --threads 2
"""
import argparse
import json
import subprocess
import time

import torch

BATCH, EMBED, HIDDEN = 32, 300, 512


def lengths_for(T, ragged):
    # Same lengths as bench_lstm.cpp.
    return [T - (b * 37) % (T // 2 + 1) if ragged else T for b in range(BATCH)]


def torch_iteration_time(T, ragged, x_grad, min_time):
    g = torch.Generator().manual_seed(1)
    lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True, bidirectional=True)
    opt = torch.optim.Adam(lstm.parameters(), lr=1e-3)
    lengths = torch.tensor(lengths_for(T, ragged), dtype=torch.int64)
    x = torch.randn(BATCH, T, EMBED, generator=g)
    w = torch.randn(BATCH, T, 2 * HIDDEN, generator=g)

    def step():
        xi = x.detach().requires_grad_(x_grad)
        opt.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=False)
        out, _ = lstm(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        out.backward(w)
        opt.step()

    step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 2:
            return dt / n


def ours_iteration_time(bench, threads, T, ragged, x_grad, min_time):
    name = f"BM_lstm_train/T:{T}/ragged:{int(ragged)}/x_grad:{int(x_grad)}/real_time"
    base = [bench, "--threads", str(threads), "--benchmark_format=json", f"--benchmark_filter=^{name}$"]
    # Google Benchmark >= 1.8 wants "0.5s"; 1.7 wants a bare number.
    for flag in (f"--benchmark_min_time={min_time}s", f"--benchmark_min_time={min_time}"):
        r = subprocess.run(base + [flag], capture_output=True, text=True)
        if r.returncode == 0:
            runs = json.loads(r.stdout)["benchmarks"]
            if not runs:
                raise SystemExit(f"{bench} has no benchmark {name}")
            return runs[0]["real_time"] / 1e3  # ms -> s
    raise SystemExit(f"{bench} failed: {r.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/bin/bench_lstm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--configs", default="128:0:1,512:0:1,128:1:1,128:0:0",
                    help="comma-separated T:ragged:x_grad triples")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]

    best = {c: [float("inf"), float("inf")] for c in configs}
    for r in range(args.rounds):
        for c in configs:
            T, ragged, x_grad = c
            best[c][0] = min(best[c][0], ours_iteration_time(args.bench, args.threads, T, ragged, x_grad, args.min_time))
            best[c][1] = min(best[c][1], torch_iteration_time(T, bool(ragged), bool(x_grad), args.min_time))
            print(f"round {r + 1}/{args.rounds} T={T} ragged={ragged} x_grad={x_grad}: "
                  f"txtcls {best[c][0] * 1e3:.0f} ms, torch {best[c][1] * 1e3:.0f} ms (best so far)", flush=True)

    print(f"\nBiLSTM {HIDDEN} over {EMBED}-d inputs, batch {BATCH}, float32, forward+backward+Adam, "
          f"threads={args.threads}, torch {torch.__version__}, best of {args.rounds} rounds")
    print(f"{'T':>5s} {'ragged':>6s} {'x_grad':>6s} {'txtcls tok/s':>13s} {'torch tok/s':>12s} {'ratio':>6s}")
    for c in configs:
        T, ragged, x_grad = c
        tokens = sum(lengths_for(T, ragged))
        ours, theirs = best[c]
        print(f"{T:5d} {ragged:6d} {x_grad:6d} {tokens / ours:13.0f} {tokens / theirs:12.0f} {theirs / ours:6.2f}")


if __name__ == "__main__":
    main()
