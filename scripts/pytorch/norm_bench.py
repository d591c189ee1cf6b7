#!/usr/bin/env python3
"""PyTorch twin of crates/norm/benches/norm.rs: forward + backward of each normalization kind in
training mode on a 128x64x16x16 float32 input, backward seeded with a fixed G (y.backward(G),
the gradient of sum(y * G)), on 2 CPU threads.

Rerun from the repository root, right after the criterion bench, on the same machine:

    python3 scripts/pytorch/norm_bench.py

    cargo bench -p explr-norm --bench norm -- --warm-up-time 1 --measurement-time 3
    python3 scripts/pytorch/norm_bench.py

Prints the median and minimum time per iteration in milliseconds for each kind, then, when
criterion's raw samples exist under target/criterion, the markdown table of the README with
candle/PyTorch ratios (the table is generated, never typed).
"""
import json
import os
import statistics
import time

import torch

# 2 threads like the criterion bench; NORM_BENCH_THREADS=1 (with RAYON_NUM_THREADS=1 for the
# criterion run) gives a comparison less disturbed by a loaded machine.
torch.set_num_threads(int(os.environ.get("NORM_BENCH_THREADS", "2")))
SHAPE = (128, 64, 16, 16)
C = SHAPE[1]
KINDS = {
    "bn": lambda: torch.nn.BatchNorm2d(C),
    "gn:16": lambda: torch.nn.GroupNorm(16, C),
    "ln": lambda: torch.nn.GroupNorm(1, C),
    "in": lambda: torch.nn.InstanceNorm2d(C, affine=True),
}


GROUP = "norm_fwd_bwd_128x64x16x16_f32"


def criterion_ms(kind, kernel):
    """Median and minimum ms per iteration from criterion's raw samples, or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "target", "criterion", GROUP, f"{kind}_{kernel}".replace(":", "_"), "new", "sample.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        sample = json.load(f)
    per_iter = [t / n / 1e6 for t, n in zip(sample["times"], sample["iters"])]
    return statistics.median(per_iter), min(per_iter)


def main():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=gen).requires_grad_(True)
    g = torch.randn(SHAPE, generator=gen)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    torch_ms = {}
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
        torch_ms[name] = (statistics.median(times) * 1e3, min(times) * 1e3)
    rows = []
    for name, (t_med, t_min) in torch_ms.items():
        fused, comp = criterion_ms(name, "fused"), criterion_ms(name, "composite")
        if fused is None or comp is None:
            continue
        rows.append(
            f"| {name} | {t_med:.2f} / {t_min:.2f} | {fused[0]:.2f} / {fused[1]:.2f} | "
            f"{fused[0] / t_med:.1f}x / {fused[1] / t_min:.1f}x | {comp[0]:.2f} / {comp[1]:.2f} | "
            f"{comp[0] / t_med:.1f}x / {comp[1] / t_min:.1f}x |"
        )
    if rows:
        print()
        print("| kind | PyTorch ms (median / min) | fused ms | fused / PyTorch | composite ms | composite / PyTorch |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
