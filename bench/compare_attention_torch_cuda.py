#!/usr/bin/env python3
"""Times txtcls's GPU attention (bench_cuda_attention: the naive composition and the fused op)
and PyTorch's CUDA torch.nn.functional.scaled_dot_product_attention on the same shapes, in
float32, TF32, bfloat16 and float16 (ours through the raw 16-bit API; torch on tensors of that
dtype), in one run, and prints the ratio torch time / fused time (> 1: txtcls faster). On tensor
cores (tf32, bf16, fp16) "fused" is the register-resident kernel and "tiles" the first,
shared-tile design.

    python3 bench/compare_attention_torch_cuda.py --bench build/bin/bench_cuda_attention \\
        --seqs 512,2048 --dims 64,128 --modes fp32,bf16 --rounds 1

PyTorch picks its own backend (FlashAttention for 16-bit inputs; the memory-efficient kernel or
the math path for float32); --modes tf32 sets torch's allow_tf32 flags as bench_cuda_attention's
tf32 rows set cuda::set_allow_tf32. Both sides are measured in every round and the best time of
each is kept. FLOPs as FlashAttention counts them: 4*B*H*L*L*D forward, 3.5x that for
forward+backward, halved when causal. Needs a CUDA build of PyTorch.
"""
import argparse
import json
import subprocess

import torch
from torch_timing import torch_time
from sdpa_step import sdpa_step


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/bin/bench_cuda_attention")
    ap.add_argument("--seqs", default="128,512,2048,8192")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--modes", default="fp32,tf32,bf16,fp16")
    ap.add_argument("--impls", default="naive,fused,tiles",
                    help="our designs to time (fewer: a shorter run)")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=1)
    return ap.parse_args()


BATCH, HEADS = 32, 8  # bench_cuda_attention's shapes


def torch_case(L, D, causal, backward, mode, min_time):
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, gout = ((torch.rand(BATCH, HEADS, L, D, generator=g, device="cuda") * 2 - 1).to(dtype)
                     for _ in range(4))
    return torch_time(sdpa_step(q, k, v, gout, causal, backward), min_time)


def ours(args, seqs, dims, modes):
    alt = lambda xs: "(" + "|".join(str(x) for x in xs) + ")"  # noqa: E731
    filt = f"^attention/{alt(args.impls.split(','))}/[^/]+/{alt(modes)}/D:{alt(dims)}/L:{alt(seqs)}/"
    cmd = [args.bench, "--benchmark_format=json", f"--benchmark_filter={filt}",
           f"--benchmark_min_time={args.min_time}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("error_occurred"):  # the naive path skips shapes whose scores do not fit
            continue
        # attention/<impl>/<pass>/<mode>/D:../L:../causal:../manual_time
        parts = b["name"].split("/")
        impl, pss, mode = parts[1], parts[2], parts[3]
        dims_ = dict(p.split(":") for p in parts[4:] if ":" in p)
        key = (mode, int(dims_["L"]), int(dims_["D"]), dims_["causal"] == "1", pss == "fwd+bwd")
        res[(impl,) + key] = b["real_time"] / 1e3  # ms -> s
    return res


def flops(L, D, causal, backward):
    return 4.0 * BATCH * HEADS * L * L * D * (3.5 if backward else 1.0) * (0.5 if causal else 1.0)


def main():
    args = parse_args()
    seqs = [int(s) for s in args.seqs.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    modes = args.modes.split(",")
    best = {}
    for r in range(args.rounds):
        for key, t in ours(args, seqs, dims, modes).items():
            best[key] = min(best.get(key, float("inf")), t)
        for mode in modes:
            for D in dims:
                for L in seqs:
                    for causal in (False, True):
                        for backward in (False, True):
                            try:
                                t = torch_case(L, D, causal, backward, mode, args.min_time)
                            except torch.cuda.OutOfMemoryError:
                                torch.cuda.empty_cache()
                                continue
                            k = ("torch", mode, L, D, causal, backward)
                            best[k] = min(best.get(k, float("inf")), t)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print(f"batch={BATCH} heads={HEADS} torch={torch.__version__} {torch.cuda.get_device_name()} "
          f"rounds={args.rounds} (best of rounds)")
    print(f"{'mode':>4} {'L':>5} {'D':>4} {'causal':>6} {'pass':>8} {'naive ms':>10} {'fused ms':>10} {'tiles ms':>10} "
          f"{'torch ms':>10} {'torch/fused':>11} {'fused TFLOP/s':>13} {'torch TFLOP/s':>13}")
    for mode in modes:
        for D in dims:
            for L in seqs:
                for causal in (False, True):
                    for backward in (False, True):
                        key = (mode, L, D, causal, backward)
                        naive, fused, tiles, tt = (best.get((impl,) + key) for impl in ("naive", "fused", "tiles", "torch"))
                        fl = flops(L, D, causal, backward)
                        fmt = lambda t: f"{t * 1e3:10.2f}" if t else f"{'-':>10}"  # noqa: E731
                        tf = lambda t: f"{fl / t / 1e12:13.2f}" if t else f"{'-':>13}"  # noqa: E731
                        ratio = f"{tt / fused:11.2f}" if fused and tt else f"{'-':>11}"
                        print(f"{mode:>4} {L:5d} {D:4d} {str(causal):>6} {'fwd+bwd' if backward else 'fwd':>8} "
                              f"{fmt(naive)} {fmt(fused)} {fmt(tiles)} {fmt(tt)} {ratio} {tf(fused)} {tf(tt)}")


if __name__ == "__main__":
    main()
