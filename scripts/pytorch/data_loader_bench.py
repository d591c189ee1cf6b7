"""PyTorch twin of crates/data/benches/loader.rs: images/s through pad-4 random crop + random
horizontal flip + ToTensor + Normalize and batching (batch 128, 10 000 CIFAR-shaped uint8 images
held in memory), on 2 threads.

Rerun: python3 scripts/pytorch/data_loader_bench.py
Two variants: `per_image` does what torchvision transforms in a DataLoader (num_workers=0) do,
one image at a time; `batched` is the fastest pure-torch form (one gather per batch).
"""

import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
N, B = 10_000, 128
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
data = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)
labels = torch.randint(0, 10, (N,))


def per_image_epoch():
    perm = torch.randperm(N)
    for s in range(0, N, B):
        imgs = []
        for i in perm[s:s + B].tolist():
            x = F.pad(data[i], (4, 4, 4, 4))
            dx, dy = torch.randint(0, 9, (2,)).tolist()
            x = x[:, dy:dy + 32, dx:dx + 32]
            if torch.rand(1).item() < 0.5:
                x = x.flip(2)
            imgs.append((x.float().div(255) - MEAN) / STD)
        yield torch.stack(imgs), labels[perm[s:s + B]]


ar = torch.arange(32)


def batched_epoch():
    perm = torch.randperm(N)
    for s in range(0, N, B):
        idx = perm[s:s + B]
        n = len(idx)
        p = F.pad(data[idx], (4, 4, 4, 4))
        dx, dy = torch.randint(0, 9, (n,)), torch.randint(0, 9, (n,))
        flip = torch.rand(n) < 0.5
        cols = torch.where(flip[:, None], 31 - ar, ar) + dx[:, None]  # (n, 32)
        rows = ar[None, :] + dy[:, None]  # (n, 32)
        x = p[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]
        yield (x.float().div(255) - MEAN) / STD, labels[idx]


def measure(epoch_fn, epochs):
    t = time.perf_counter()
    for _ in range(epochs):
        count = sum(x.shape[0] for x, _ in epoch_fn())
        assert count == N
    return N * epochs / (time.perf_counter() - t)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    measure(batched_epoch, 1)  # warm-up
    print(f"per_image: {measure(per_image_epoch, 2):,.0f} images/s")
    print(f"batched:   {measure(batched_epoch, 5):,.0f} images/s")
