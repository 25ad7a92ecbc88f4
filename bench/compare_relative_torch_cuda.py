#!/usr/bin/env python3
"""Times txtcls's fused XLNet relative attention on the GPU (bench_cuda_relative_attention: the
fused op and the unfused composition) and PyTorch running the same core as Hugging Face's XLNet
computes it (einsums for the content, position and segment scores, the relative shift, a stored
softmax; no fused kernel exists there), float32, in one run, and prints torch time / fused time
(> 1: txtcls faster). Shapes as the C++ benchmark: batch 4 x 8 heads, head dim 64, queries L,
memory 0 or L / 2, attn_type "bi" (klen + qlen relative positions), the segment term through
seg_mat; forward alone and forward + backward with gradients for q, k, v, the position keys,
the three biases and seg_embed.

    python3 bench/compare_relative_torch_cuda.py --bench build/bin/bench_cuda_relative_attention \\
        --seqs 512,1024,2048 --min-time 0.1

Needs a CUDA build of PyTorch.
"""
import argparse
import json
import subprocess

import torch
from torch_timing import torch_time

BATCH, HEADS, DIM = 4, 8, 64  # bench_cuda_relative_attention's shapes


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/bin/bench_cuda_relative_attention")
    ap.add_argument("--seqs", default="512,1024,2048")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    return ap.parse_args()


def shift_positions(x, klen):
    """[B, H, Lq, P] scores against positions klen ... -qlen + 1 to [B, H, Lq, klen] scores against
    keys: row i moves left by qlen - i, as Transformer-XL's relative shift does."""
    b, h, lq, p = x.shape
    x = x.reshape(b, h, p, lq)[:, :, 1:, :].reshape(b, h, lq, p - 1)
    return x[..., :klen]


def relative_core(q, k, v, kr, rw, rr, rs, seg_embed, seg_mat):
    klen = k.shape[2]
    ac = torch.einsum("bhid,bhjd->bhij", q + rw[:, None], k)
    bd = shift_positions(torch.einsum("bhid,bhpd->bhip", q + rr[:, None], kr.expand(q.shape[0], -1, -1, -1)), klen)
    ef = torch.einsum("bhid,shd->bhis", q + rs[:, None], seg_embed)
    ef = torch.einsum("bijs,bhis->bhij", seg_mat, ef)
    p = torch.softmax((ac + bd + ef) * (DIM ** -0.5), dim=-1)
    return torch.einsum("bhij,bhjd->bhid", p, v)


def torch_case(L, mlen, backward, min_time):
    g = torch.Generator(device="cuda").manual_seed(0)
    klen = mlen + L

    def randn(*shape, sd=1.0):
        return torch.randn(*shape, generator=g, device="cuda") * sd

    leaves = [randn(BATCH, HEADS, L, DIM), randn(BATCH, HEADS, klen, DIM), randn(BATCH, HEADS, klen, DIM),
              randn(1, HEADS, klen + L, DIM), randn(HEADS, DIM, sd=0.1), randn(HEADS, DIM, sd=0.1),
              randn(HEADS, DIM, sd=0.1), randn(2, HEADS, DIM, sd=0.1)]
    # Two segments in the input, the memory in segment 0: seg_mat[b, i, j] one-hot of "different".
    seg_q = (torch.arange(L, device="cuda") >= L // 2).long()
    seg_k = torch.cat([torch.zeros(mlen, dtype=torch.long, device="cuda"), seg_q])
    diff = (seg_q[:, None] != seg_k[None, :]).long()
    seg_mat = torch.nn.functional.one_hot(diff, 2).float()[None].expand(BATCH, -1, -1, -1).contiguous()
    gout = randn(BATCH, HEADS, L, DIM)
    if not backward:
        def fn():
            with torch.no_grad():
                relative_core(*leaves, seg_mat)
        return torch_time(fn, min_time)
    for t in leaves:
        t.requires_grad_(True)

    def fn():
        relative_core(*leaves, seg_mat).backward(gout)
        for t in leaves:
            t.grad = None
    return torch_time(fn, min_time)


def ours(args, seqs):
    alt = "(" + "|".join(str(s) for s in seqs) + ")"
    cmd = [args.bench, "--benchmark_format=json", f"--benchmark_filter=^relattn/.*/L:{alt}/",
           f"--benchmark_min_time={args.min_time}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("error_occurred"):
            continue
        # relattn/<impl>/<pass>/B:../H:../D:../L:../mem:..
        parts = b["name"].split("/")
        dims = dict(p.split(":") for p in parts[3:] if ":" in p)
        res[(parts[1], int(dims["L"]), int(dims["mem"]), parts[2] == "fwd+bwd")] = b["real_time"] / 1e3
    return res


def main():
    args = parse_args()
    seqs = [int(s) for s in args.seqs.split(",")]
    res = ours(args, seqs)
    for L in seqs:
        for mlen in (0, L // 2):
            for backward in (False, True):
                res[("torch", L, mlen, backward)] = torch_case(L, mlen, backward, args.min_time)
    print(f"batch={BATCH} heads={HEADS} dim={DIM} float32 torch={torch.__version__} {torch.cuda.get_device_name()}")
    print(f"{'L':>5} {'mem':>5} {'pass':>8} {'unfused ms':>11} {'fused ms':>10} {'torch ms':>10} {'torch/fused':>11}")
    for L in seqs:
        for mlen in (0, L // 2):
            for backward in (False, True):
                unf, fus, tt = (res.get((impl, L, mlen, backward)) for impl in ("unfused", "fused", "torch"))
                fmt = lambda t: f"{t * 1e3:10.2f}" if t else f"{'-':>10}"  # noqa: E731
                ratio = f"{tt / fus:11.2f}" if fus and tt else f"{'-':>11}"
                print(f"{L:5d} {mlen:5d} {'fwd+bwd' if backward else 'fwd':>8} {fmt(unf):>11} {fmt(fus)} {fmt(tt)} {ratio}")


if __name__ == "__main__":
    main()
