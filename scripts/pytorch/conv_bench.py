"""PyTorch twin of crates/nn/benches/conv.rs: forward + backward of every conv shape of
PreResNet-20 at batch 128, f32 and f64, two threads.

Rerun (from the repository root, on the machine the Rust bench ran on, right after it):
    python3 scripts/pytorch/conv_bench.py --out target/conv_bench_torch.json
Each shape is timed like criterion's step: y = conv2d(x, w); y.backward(ones_like(y)),
median of `--reps` timed runs after warm-up. Prints one line per shape and writes JSON
(milliseconds, with the torch version) for scripts/pytorch/conv_report.py.
"""
import argparse
import json
import time

import torch

# (name, in channels, out channels, input side, kernel, stride, padding): same as the bench.
SHAPES = [
    ("c3k16s32", 3, 16, 32, 3, 1, 1),
    ("c16k16s32", 16, 16, 32, 3, 1, 1),
    ("c16k32s32st2", 16, 32, 32, 3, 2, 1),
    ("c32k32s16", 32, 32, 16, 3, 1, 1),
    ("c32k64s16st2", 32, 64, 16, 3, 2, 1),
    ("c64k64s8", 64, 64, 8, 3, 1, 1),
    ("c16k32s32st2k1", 16, 32, 32, 1, 2, 0),
]


def time_shape(dtype, n, cin, cout, side, k, stride, pad, reps):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, cin, side, side, generator=g, dtype=dtype) * 2 - 1).requires_grad_()
    w = (torch.rand(cout, cin, k, k, generator=g, dtype=dtype) * 2 - 1).requires_grad_()

    def step():
        x.grad = None
        w.grad = None
        y = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
        y.backward(torch.ones_like(y))

    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="target/conv_bench_torch.json")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    result = {"torch_version": torch.__version__, "threads": 2, "batch": args.batch, "ms": {}}
    for dtype, tag in [(torch.float32, "f32"), (torch.float64, "f64")]:
        for name, cin, cout, side, k, stride, pad in SHAPES:
            ms = time_shape(dtype, args.batch, cin, cout, side, k, stride, pad, args.reps)
            result["ms"][f"{tag}/{name}"] = ms
            print(f"{tag} {name:16s} {ms:9.3f} ms", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
