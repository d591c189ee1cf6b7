"""Markdown table for docs/PERFORMANCE.md from the criterion results of
crates/nn/benches/conv.rs and the JSON of scripts/pytorch/conv_bench.py.

Rerun (from the repository root, after both benches):
    python3 scripts/pytorch/conv_report.py --torch target/conv_bench_torch.json
Times are criterion's median (ours, candle) and PyTorch's median, in ms per forward+backward.
"""
import argparse
import json
import os

# How often each shape occurs among PreResNet-20's 19 convs (option-A shortcuts: no 1x1 convs).
WEIGHTS = {
    "c3k16s32": 1,
    "c16k16s32": 6,
    "c16k32s32st2": 1,
    "c32k32s16": 5,
    "c32k64s16st2": 1,
    "c64k64s8": 5,
    "c16k32s32st2k1": 0,
}


def criterion_ms(root, dtype, impl, name):
    path = os.path.join(root, f"conv_{dtype}", impl, name, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", default="target/conv_bench_torch.json")
    ap.add_argument("--criterion", default="target/criterion")
    args = ap.parse_args()
    with open(args.torch) as f:
        torch_res = json.load(f)
    print(f"PyTorch {torch_res['torch_version']}, {torch_res['threads']} threads, "
          f"batch {torch_res['batch']}; ms per forward+backward (median).\n")
    for dtype in ["f32", "f64"]:
        print(f"| {dtype} shape | × in PreResNet-20 | ours | candle | PyTorch | ours / PyTorch "
              f"| candle / ours |")
        print("|---|---|---|---|---|---|---|")
        tot = {"ours": 0.0, "candle": 0.0, "torch": 0.0}
        for name, weight in WEIGHTS.items():
            ours = criterion_ms(args.criterion, dtype, "ours", name)
            candle = criterion_ms(args.criterion, dtype, "candle", name)
            torch_ms = torch_res["ms"][f"{dtype}/{name}"]
            tot["ours"] += weight * ours
            tot["candle"] += weight * candle
            tot["torch"] += weight * torch_ms
            print(f"| {name} | {weight} | {ours:.2f} | {candle:.2f} | {torch_ms:.2f} "
                  f"| {ours / torch_ms:.2f} | {candle / ours:.1f} |")
        print(f"| **weighted sum (19 convs)** | | **{tot['ours']:.1f}** | {tot['candle']:.1f} "
              f"| **{tot['torch']:.1f}** | **{tot['ours'] / tot['torch']:.2f}** "
              f"| {tot['candle'] / tot['ours']:.1f} |\n")


if __name__ == "__main__":
    main()
