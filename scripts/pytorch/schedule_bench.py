#!/usr/bin/env python3
"""PyTorch twin of crates/schedule/benches/sgd_step.rs: one torch.optim.SGD(foreach=True) step
(momentum 0.9, weight decay on the scale-invariant group) over ~1M parameters in 3 groups.

Rerun from the repository root, right after `cargo bench -p explr-schedule --bench sgd_step`:

    python3 scripts/pytorch/schedule_bench.py
"""
import time

import torch

torch.set_num_threads(2)
LAYOUT = [("scale_invariant", 24, (64, 64, 3, 3)), ("head", 1, (10, 10000)), ("norm_affine", 40, (256,))]


def run(dtype):
    groups = []
    for name, count, shape in LAYOUT:
        params = []
        for i in range(count):
            n = 1
            for s in shape:
                n *= s
            j = torch.arange(n, dtype=torch.float64)
            v = (((i * 7919 + j) % 1000) / 1000.0 - 0.5).reshape(shape).to(dtype)
            p = torch.nn.Parameter(v)
            p.grad = v * 0.01 + 0.001
            params.append(p)
        g = {"params": params}
        if name == "scale_invariant":
            g["weight_decay"] = 5e-4
        if name == "head":
            g["lr"] = 0.05
        groups.append(g)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, foreach=True)
    opt.step()
    for _ in range(5):
        opt.step()
    times = []
    for _ in range(20):
        t = time.perf_counter()
        reps = 10
        for _ in range(reps):
            opt.step()
        times.append((time.perf_counter() - t) / reps)
    times.sort()
    n = sum(p.numel() for g in groups for p in g["params"])
    print(f"torch {torch.__version__} sgd_step_1M_{str(dtype).split('.')[-1]}: median {times[len(times)//2]*1e3:.3f} ms "
          f"(min {times[0]*1e3:.3f}, max {times[-1]*1e3:.3f}) over {n} params")


for dt in (torch.float32, torch.float64):
    run(dt)
