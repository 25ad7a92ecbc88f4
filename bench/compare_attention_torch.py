#!/usr/bin/env python3
"""Times txtcls's CPU attention (bench_attention: the naive reference and the fused op) and
PyTorch's torch.nn.functional.scaled_dot_product_attention on the same shapes, float32, with the
same thread count, in one run, and prints the ratio torch time / fused time (> 1: txtcls faster).

    python3 bench/compare_attention_torch.py --bench build/bin/bench_attention --threads 2 \\
        --batch 4 --seqs 512,1024,2048 --dims 64,128 --rounds 3

Both sides are measured in every round, one after the other, and the best time of each over the
rounds is kept, so a machine shared with other jobs penalises both alike. FLOPs are counted as
FlashAttention's benchmarks do: 4*B*H*L*L*D forward, 2.5x that for the backward alone, so 3.5x
for forward+backward; halved when causal. The program's `peak/fma` benchmark measures the machine's
FMA peak in the same rounds, and the last column says which ratio a kernel running at that peak
would reach: the ceiling for any implementation on this machine. --causal yes|no limits the run
to causal or non-causal shapes.
"""
import argparse
import json
import os
import subprocess
import time


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/bin/bench_attention")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seqs", default="128,256,512,1024,2048")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--impls", default="naive,fused", help="txtcls implementations to run")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--naive-max-gib", type=float, default=2.0)
    ap.add_argument("--causal", choices=("both", "yes", "no"), default="both",
                    help="run causal shapes, non-causal ones, or both")
    return ap.parse_args()


ARGS = parse_args()
# The thread count must be fixed before torch (and its OpenMP runtime) is loaded.
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
import torch  # noqa: E402
from sdpa_step import sdpa_step  # noqa: E402


def torch_time(fn, min_time):
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 2:
            return dt / n


def torch_case(B, H, L, D, causal, backward, min_time):
    g = torch.Generator().manual_seed(0)
    q, k, v, gout = (torch.randn(B, H, L, D, generator=g) for _ in range(4))
    return torch_time(sdpa_step(q, k, v, gout, causal, backward), min_time)


def causal_values(args):
    return {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]


def causal_filter(args):
    return {"both": "", "yes": ".*/causal:1/", "no": ".*/causal:0/"}[args.causal]


def ours(args):
    cmd = [args.bench, "--threads", str(args.threads), "--batch", str(args.batch), "--heads", str(args.heads),
           "--seqs", args.seqs, "--dims", args.dims, "--impls", args.impls,
           "--naive-max-gib", str(args.naive_max_gib), "--benchmark_format=json", f"--benchmark_filter=^(sdpa/{causal_filter(args)}|peak/fma)",
           f"--benchmark_min_time={args.min_time}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        # sdpa/<impl>/<pass>/B:../H:../L:../D:../causal:../real_time
        parts = b["name"].split("/")
        if parts[0] == "peak":  # the FMA peak: FLOP/s that no kernel can beat (attention_fma_peak.cpp)
            res[("peak",)] = 1.0 / (b["TFLOP"] * 1e12)  # kept as seconds per FLOP, so min() is best
            continue
        if parts[0] != "sdpa":  # other attention benchmarks share the program
            continue
        impl, pss = parts[1], parts[2]
        dims = dict(p.split(":") for p in parts[3:] if ":" in p)
        key = (int(dims["L"]), int(dims["D"]), dims["causal"] == "1", pss == "fwd_bwd")
        res[(impl,) + key] = b["real_time"] / 1e3  # ms -> s
    return res


def flops(B, H, L, D, causal, backward):
    return 4.0 * B * H * L * L * D * (3.5 if backward else 1.0) * (0.5 if causal else 1.0)


def possible(fl, torch_time, peak):
    """torch time / the time of the counted FLOPs at the FMA peak: no kernel's ratio can exceed it."""
    return f"{torch_time * peak / fl:13.2f}" if peak else f"{'-':>13}"


def main():
    args = ARGS
    torch.set_num_threads(args.threads)
    seqs = [int(s) for s in args.seqs.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    best = {}
    for r in range(args.rounds):
        for key, t in ours(args).items():
            best[key] = min(best.get(key, float("inf")), t)
        for D in dims:
            for L in seqs:
                for causal in causal_values(args):
                    for backward in (False, True):
                        t = torch_case(args.batch, args.heads, L, D, causal, backward, args.min_time)
                        k = ("torch", L, D, causal, backward)
                        best[k] = min(best.get(k, float("inf")), t)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    peak = 1.0 / best[("peak",)] if ("peak",) in best else None
    print(f"threads={args.threads} batch={args.batch} heads={args.heads} torch={torch.__version__} "
          f"rounds={args.rounds} (best of rounds)")
    if peak:
        print(f"FMA peak ({args.threads} threads, independent FMA chains): {peak / 1e12:.4f} TFLOP/s; "
              "'best possible' = the ratio a kernel running the counted FLOPs at that peak would reach")
    print(f"{'L':>5} {'D':>4} {'causal':>6} {'pass':>8} {'naive ms':>10} {'fused ms':>10} {'torch ms':>10} "
          f"{'torch/fused':>11} {'fused TFLOP/s':>13} {'torch TFLOP/s':>13} {'best possible':>13}")
    for D in dims:
        for L in seqs:
            for causal in causal_values(args):
                for backward in (False, True):
                    key = (L, D, causal, backward)
                    naive, fused, tt = (best.get((impl,) + key) for impl in ("naive", "fused", "torch"))
                    fl = flops(args.batch, args.heads, L, D, causal, backward)
                    fmt = lambda t: f"{t * 1e3:10.1f}" if t else f"{'-':>10}"  # noqa: E731
                    ratio = f"{tt / fused:11.2f}" if fused and tt else f"{'-':>11}"
                    ftf = f"{fl / fused / 1e12:13.4f}" if fused else f"{'-':>13}"
                    print(f"{L:5d} {D:4d} {str(causal):>6} {'fwd+bwd' if backward else 'fwd':>8} {fmt(naive)} "
                          f"{fmt(fused)} {fmt(tt)} {ratio} {ftf} {fl / tt / 1e12:13.4f} {possible(fl, tt, peak)}")


if __name__ == "__main__":
    main()
