"""The PyTorch side of the attention comparisons (compare_attention_torch.py on the CPU,
compare_attention_torch_cuda.py on the GPU): one call of scaled_dot_product_attention, forward
only or forward + backward, as a function to time. torch is imported by the caller first (the
CPU script must fix its thread count before that)."""
import torch
import torch.nn.functional as F


def sdpa_step(q, k, v, gout, causal, backward):
    if not backward:
        def fn():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return fn
    for t in (q, k, v):
        t.requires_grad_(True)

    def fn():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out.backward(gout)
        for t in (q, k, v):
            t.grad = None
    return fn
