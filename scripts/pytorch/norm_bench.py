#!/usr/bin/env python3
"""PyTorch twin of crates/norm/benches/norm.rs: forward + backward of each normalization kind in
training mode on a 128x64x16x16 float32 input, backward seeded with a fixed G (y.backward(G),
the gradient of sum(y * G)), on 2 CPU threads.

Rerun from the repository root, right after the criterion bench, on the same machine:

    python3 scripts/pytorch/norm_bench.py

Prints one line per kind: the median and minimum time per iteration in milliseconds.
"""
import statistics
import time

import torch

torch.set_num_threads(2)
SHAPE = (128, 64, 16, 16)
C = SHAPE[1]
KINDS = {
    "bn": lambda: torch.nn.BatchNorm2d(C),
    "gn:16": lambda: torch.nn.GroupNorm(16, C),
    "ln": lambda: torch.nn.GroupNorm(1, C),
    "in": lambda: torch.nn.InstanceNorm2d(C, affine=True),
}


def main():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=gen).requires_grad_(True)
    g = torch.randn(SHAPE, generator=gen)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, make in KINDS.items():
        layer = make().train()

        def step():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x).backward(g)

        for _ in range(5):
            step()
        times = []
        for _ in range(40):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(f"{name:6s} median {statistics.median(times) * 1e3:8.3f} ms   min {min(times) * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
