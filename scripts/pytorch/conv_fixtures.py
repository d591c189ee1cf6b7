"""PyTorch reference for explr-nn's conv2d: output and both gradients on a few shapes, f64.

Rerun (from the repository root):
    python3 scripts/pytorch/conv_fixtures.py
Writes crates/nn/tests/fixtures/conv.safetensors: for case i, tensors `{i}.x`, `{i}.w`,
`{i}.dy` (inputs) and `{i}.y`, `{i}.dx`, `{i}.dw` (y = conv2d(x, w), and the gradients of
sum(y * dy)); the metadata records the torch version and, under key `{i}`, "stride=S padding=P".
"""
import torch
from safetensors.torch import save_file

# (n, c, h, w), (k, kh, kw), stride, padding
CASES = [
    ((2, 3, 7, 5), (4, 3, 3), 2, 1),
    ((2, 4, 8, 8), (6, 1, 1), 2, 0),
    ((1, 2, 5, 9), (3, 2, 3), 1, 2),
    ((3, 16, 8, 8), (8, 3, 3), 1, 1),
    ((2, 3, 6, 6), (5, 3, 3), 2, 1),
]


def main():
    g = torch.Generator().manual_seed(2020)
    tensors, meta = {}, {"torch_version": torch.__version__}
    for i, ((n, c, h, w), (k, kh, kw), stride, pad) in enumerate(CASES):
        x = (torch.rand(n, c, h, w, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
        wt = (torch.rand(k, c, kh, kw, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
        y = torch.nn.functional.conv2d(x, wt, stride=stride, padding=pad)
        dy = torch.rand(y.shape, generator=g, dtype=torch.float64) * 2 - 1
        (y * dy).sum().backward()
        for name, t in [("x", x), ("w", wt), ("dy", dy), ("y", y), ("dx", x.grad), ("dw", wt.grad)]:
            tensors[f"{i}.{name}"] = t.detach().contiguous()
        meta[f"{i}"] = f"stride={stride} padding={pad}"
    save_file(tensors, "crates/nn/tests/fixtures/conv.safetensors", metadata=meta)


if __name__ == "__main__":
    main()
