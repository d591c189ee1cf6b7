"""PyTorch twin of crates/zoo/benches/train_step.rs: one PreResNet-20 training step at batch
128 on 32x32 inputs (forward in train mode, cross-entropy, backward, plain SGD update of every
parameter with lr 0.1), float32 and float64, 2 threads, CPU.

Rerun from the repository root, right after the criterion bench, on the same machine:

    python3 scripts/pytorch/zoo_bench.py

Prints the median, min and max seconds per step over the timed steps of each dtype.
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_models import build  # noqa: E402

BATCH, LR, WARMUP, STEPS = 128, 0.1, 2, 10


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for dtype in (torch.float32, torch.float64):
        model = build("preresnet", 20).to(dtype).train()
        i = torch.arange(BATCH * 3 * 32 * 32, dtype=torch.float64)
        x = torch.sin(i * 0.7919).reshape(BATCH, 3, 32, 32).to(dtype)
        y = torch.arange(BATCH) % 10
        times = []
        for k in range(WARMUP + STEPS):
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.sub_(LR * p.grad)
            if k >= WARMUP:
                times.append(time.perf_counter() - t0)
        print(f"{dtype}: median {statistics.median(times):.4f} s/step "
              f"(min {min(times):.4f}, max {max(times):.4f}, {STEPS} steps)")


if __name__ == "__main__":
    main()
