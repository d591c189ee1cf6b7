"""Reference fixtures for explr-data (crates/data/tests/fixtures/data_reference.safetensors).

Rerun from the repository root:   python3 scripts/pytorch/data_fixtures.py
Needs torch, numpy and safetensors; deterministic (numpy seed 20200101), no network.

What it records, computed with PyTorch only:
- `records`: a small CIFAR-10 binary file in the official layout (label byte, then the R, G, B
  planes of 32x32 row-major) built with numpy, and `images`/`labels`: what torchvision's CIFAR
  reader yields for it (`data.reshape(-1, 3, 32, 32)`), so the Rust reader is checked against an
  independent decoding.
- `aug_f64`/`aug_f32`: torchvision's training transform written out in torch ops, in the same
  order as `RandomCrop(32, padding=4)` -> `RandomHorizontalFlip()` -> `ToTensor()` ->
  `Normalize(mean, std)`: zero-pad the uint8 image by 4, crop at (dy, dx), flip if asked, scale by
  1/255, normalize with CIFAR-10's statistics. f64 in float64 throughout; f32 as torchvision does
  it (float32 throughout). The crops/flips are listed in `crops` as rows (image, dx, dy, flip).
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "data", "tests", "fixtures",
                   "data_reference.safetensors")


def transform(img_u8, dx, dy, flip, dtype):
    x = F.pad(img_u8.to(torch.int32), (4, 4, 4, 4), value=0)  # zero padding on the uint8 image
    x = x[:, dy:dy + 32, dx:dx + 32]
    if flip:
        x = torch.flip(x, dims=[2])
    x = x.to(dtype).div(255)  # ToTensor
    mean = torch.tensor(MEAN, dtype=dtype).view(3, 1, 1)
    std = torch.tensor(STD, dtype=dtype).view(3, 1, 1)
    return (x - mean) / std  # Normalize


def main():
    rng = np.random.default_rng(20200101)
    n = 5
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).reshape(-1)
    # torchvision's decoding of the same bytes
    decoded = records.reshape(n, 3073)[:, 1:].reshape(-1, 3, 32, 32)
    crops = [(0, 4, 4, 0), (1, 0, 0, 1), (2, 8, 8, 0), (3, 0, 8, 1), (4, 8, 0, 1), (0, 3, 7, 1),
             (1, 6, 2, 0)]
    aug64, aug32 = [], []
    for (i, dx, dy, flip) in crops:
        t = torch.from_numpy(images[i].copy())
        aug64.append(transform(t, dx, dy, flip, torch.float64))
        aug32.append(transform(t, dx, dy, flip, torch.float32))
    tensors = {
        "records": torch.from_numpy(records.copy()),
        "images": torch.from_numpy(decoded.copy()),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "crops": torch.tensor(crops, dtype=torch.int64),
        "aug_f64": torch.stack(aug64),
        "aug_f32": torch.stack(aug32),
    }
    save_file(tensors, OUT, metadata={"torch_version": torch.__version__,
                                      "script": "scripts/pytorch/data_fixtures.py"})
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
