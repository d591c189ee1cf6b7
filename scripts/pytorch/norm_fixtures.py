#!/usr/bin/env python3
"""PyTorch reference fixtures for explr-norm's parity tests.

Rerun from the repository root (CPU only, deterministic, no network):

    python3 scripts/pytorch/norm_fixtures.py

It writes crates/norm/tests/fixtures/norm_parity.safetensors; the torch version that produced
it is recorded in the file's metadata (`torch_version`) and checked by nothing but shown by the
tests on failure.

For every case and dtype (f32, f64) the protocol, mirrored exactly by crates/norm/tests/parity.rs:
  1. build the layer, set weight/bias to `weight`/`bias` (random, so affine gradients matter);
  2. train-mode forward of `x0` -> `y_train`; loss = sum(y_train * G) -> `dx`, `dweight`, `dbias`;
  3. two more train-mode forwards on `x1`, `x2` (three steps in all, running stats move each time);
  4. `running_mean`, `running_var`, `num_batches_tracked` (where the layer tracks them);
  5. eval-mode forward of `xe` -> `y_eval`.
Tensor names are `<case>.<dtype>.<name>`.
"""
import os

import torch
from safetensors.torch import save_file

SHAPE = (4, 6, 3, 5)  # N, C, H, W (H != W to catch mix-ups)
C = SHAPE[1]

# name -> (constructor, has running stats); eps varies to test it is honoured.
CASES = {
    "bn_momentum": (lambda: torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.1), True),
    "bn_cumulative": (lambda: torch.nn.BatchNorm2d(C, eps=1e-5, momentum=None), True),
    "gn3": (lambda: torch.nn.GroupNorm(3, C, eps=1e-3), False),
    "ln": (lambda: torch.nn.GroupNorm(1, C, eps=1e-5), False),
    "in": (lambda: torch.nn.InstanceNorm2d(C, eps=1e-5, affine=True), False),
    "in_running": (
        lambda: torch.nn.InstanceNorm2d(
            C, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True
        ),
        True,
    ),
}


def sample(gen, dtype):
    # Per-channel offsets and scales so means and variances differ across channels.
    offset = torch.randn(1, C, 1, 1, generator=gen, dtype=torch.float64) * 3
    scale = torch.rand(1, C, 1, 1, generator=gen, dtype=torch.float64) * 2 + 0.5
    return (torch.randn(SHAPE, generator=gen, dtype=torch.float64) * scale + offset).to(dtype)


def main():
    out = {}
    for dtype, dname in [(torch.float32, "f32"), (torch.float64, "f64")]:
        for i, (case, (make, running)) in enumerate(CASES.items()):
            gen = torch.Generator().manual_seed(1000 + i)
            xs = [sample(gen, dtype) for _ in range(3)]
            xe = sample(gen, dtype)
            g = torch.randn(SHAPE, generator=gen, dtype=torch.float64).to(dtype)
            weight = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
            bias = torch.randn(C, generator=gen, dtype=torch.float64).to(dtype)

            layer = make().to(dtype)
            with torch.no_grad():
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
            layer.train()
            x0 = xs[0].clone().requires_grad_(True)
            y = layer(x0)
            (y * g).sum().backward()
            with torch.no_grad():
                for x in xs[1:]:
                    layer(x)
                layer.eval()
                y_eval = layer(xe)

            p = f"{case}.{dname}."
            for k, x in enumerate(xs):
                out[p + f"x{k}"] = x
            out[p + "xe"] = xe
            out[p + "G"] = g
            out[p + "weight"] = weight
            out[p + "bias"] = bias
            out[p + "y_train"] = y.detach()
            out[p + "dx"] = x0.grad
            out[p + "dweight"] = layer.weight.grad
            out[p + "dbias"] = layer.bias.grad
            out[p + "y_eval"] = y_eval
            if running:
                out[p + "running_mean"] = layer.running_mean
                out[p + "running_var"] = layer.running_var
                out[p + "num_batches_tracked"] = layer.num_batches_tracked.reshape(())
    out = {k: v.detach().contiguous().clone() for k, v in out.items()}
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "crates", "norm", "tests", "fixtures", "norm_parity.safetensors")
    save_file(out, os.path.normpath(path), metadata={"torch_version": torch.__version__, "shape": str(SHAPE)})
    print(f"wrote {len(out)} tensors to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
