"""Is the synthetic twin learnable but not trivial? Trains on a dump made by
`cargo run -p explr-data --release --example dump_synthetic -- DIR 0 10000 2000`.

Rerun: python3 scripts/pytorch/synthetic_learnability.py DIR [EPOCHS]
Reports test accuracy of a linear model on pixels and of a small convnet (with and without the
standard pad-4 crop + flip augmentation). 2 threads, seed 0; minutes on 2 cores.
"""

import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def read(path):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    return torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(raw[:, 0].astype(np.int64))


def augment(x):
    n = x.shape[0]
    p = F.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (n,)), torch.randint(0, 9, (n,))
    out = torch.stack([p[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def prep(x_u8):
    return (x_u8.float() / 255 - MEAN) / STD


def convnet():
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def train(model, xtr, ytr, xte, yte, epochs, aug):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr))
        for s in range(0, len(ytr), 128):
            idx = perm[s:s + 128]
            xb = xtr[idx]
            xb = prep(augment(xb) if aug else xb)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(prep(xte[s:s + 500])).argmax(1) for s in range(0, len(yte), 500)])
    return (pred == yte).float().mean().item()


def main():
    d = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    xtr, ytr = read(f"{d}/data_batch_1.bin")
    xte, yte = read(f"{d}/test_batch.bin")
    t = time.time()
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    print(f"linear on pixels, {epochs} epochs: test acc {train(lin, xtr, ytr, xte, yte, epochs, False):.3f}")
    print(f"convnet, no augmentation, {epochs} epochs: test acc {train(convnet(), xtr, ytr, xte, yte, epochs, False):.3f}")
    print(f"convnet, pad-4 crop + flip, {epochs} epochs: test acc {train(convnet(), xtr, ytr, xte, yte, epochs, True):.3f}")
    print(f"torch {torch.__version__}, {time.time() - t:.0f}s")


if __name__ == "__main__":
    main()
