"""CUDA-event timing of a PyTorch callable, shared by the GPU comparison scripts."""
import torch


def torch_time(fn, min_time, min_runs=2):
    """Mean seconds per call of fn on the current CUDA stream: one warm-up call (kernels chosen,
    allocator filled), then calls timed by CUDA events until min_time seconds and min_runs calls."""
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    total, n = 0.0, 0
    while total < min_time or n < min_runs:
        a.record()
        fn()
        b.record()
        b.synchronize()
        total += a.elapsed_time(b) / 1e3
        n += 1
    return total / n
