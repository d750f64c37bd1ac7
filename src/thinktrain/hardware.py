"""What this machine's devices can do: a bf16 accelerator or not, a dense matmul's peak, CPU bf16 against fp32.

Used by recipe.parse (CPU bf16 only where the CPU has it) and by pretraining (the denominator of MFU).
"""

from __future__ import annotations

import functools
import time


def has_bf16_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def measure_peak_tflops(dtype, device, n: int | None = None, reps: int = 5) -> float:
    """Dense matmul TFLOP/s of one device in `dtype`, the fastest of `reps` (a busy moment must not lower it):
    the denominator of MFU when the recipe gives none."""
    import torch

    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for i in range(reps + 1):  # the first is warm-up
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start) if i else best
    return 2 * n**3 / best / 1e12


@functools.cache
def cpu_bf16_speedup(n: int = 256) -> float:
    """How many times faster an n x n matmul runs in bf16 than in fp32 on this CPU: > 1 with AVX512-BF16 or AMX,
    ~0.01 on CPUs without native bf16 (AVX2 only), where PyTorch emulates it."""
    import torch

    return (measure_peak_tflops(torch.bfloat16, "cpu", n=n, reps=3)
            / measure_peak_tflops(torch.float32, "cpu", n=n, reps=3))
