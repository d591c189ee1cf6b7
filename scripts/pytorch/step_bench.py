"""PyTorch twin of crates/zoo/examples/step_bench.rs: times full training steps of one model on
the CPU, or on a GPU with --device cuda (forward in train mode, cross-entropy, backward,
torch.optim.SGD step with lr 0.1, momentum 0.9, weight decay 5e-4 on every parameter) and prints
one JSON object with the same keys: median_s, images_per_s, peak_rss_mb (VmHWM of this
process), the phase split, ...

On a GPU every phase ends with torch.cuda.synchronize(), as the Rust side synchronizes, and the
JSON also has device, peak_gpu_mb (torch.cuda.max_memory_allocated) and the TF32 settings
(PyTorch's defaults: cuDNN convolutions may use TF32, matmuls do not; explr's f32 is full FP32).

One configuration per process, so peak_rss_mb is that configuration's peak (it includes the
torch runtime itself: base_rss_mb is the resident size after `import torch`).

flops_forward and flops_backward are the floating-point operations of one step's forward (with
the loss) and backward pass as torch.utils.flop_counter.FlopCounterMode counts them from the
shapes (convolutions and matrix products, two per multiply-add), in one more step after the
timed ones, which is not timed.

Rerun from the repository root (`cargo xtask bench` runs it right after our side):

    python3 scripts/pytorch/step_bench.py --model preresnet-20 --batch 128 --dtype f32 \
        --warmup 2 --steps 10 --threads 2
"""
import argparse
import json
import os
import statistics
import sys
import time


def proc_status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise SystemExit(f"no {key} in /proc/self/status")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="preresnet-20", help="ARCH-DEPTH, e.g. preresnet-32")
    p.add_argument("--width", type=int, default=None,
                   help="base width (default: the architecture's own, 16 for the ResNets)")
    p.add_argument("--norm", default="bn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    a = p.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"step_bench.py: cannot import torch ({e}); install PyTorch for this python3",
              file=sys.stderr)
        sys.exit(3)
    base_rss_mb = proc_status_mb("VmRSS")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from zoo_models import build, default_width  # noqa: E402

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = {"f32": torch.float32, "f64": torch.float64}[a.dtype]
    arch, depth = a.model.rsplit("-", 1)
    gpu = a.device != "cpu"
    if gpu and not torch.cuda.is_available():
        print(f"step_bench.py: --device {a.device}, but this torch sees no CUDA GPU",
              file=sys.stderr)
        sys.exit(3)
    dev = torch.device(a.device)
    # Waits for queued GPU work, so that each phase is timed to its end; nothing on the CPU.
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    if a.width is not None and a.width < 1:
        raise SystemExit("--width must be at least 1")
    width = a.width if a.width is not None else default_width(arch)
    model = build(arch, int(depth), norm=a.norm, width=width).to(dtype).train()
    if gpu:
        model = model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    # The same deterministic input as the Rust side.
    i = torch.arange(a.batch * 3 * 32 * 32, dtype=torch.float64)
    x = torch.sin(i * 0.7919).reshape(a.batch, 3, 32, 32).to(dtype)
    y = torch.arange(a.batch) % 10
    if gpu:
        x, y = x.to(dev), y.to(dev)

    total, fwd, bwd, step = [], [], [], []
    loss = None
    for k in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        t3 = time.perf_counter()
        if k >= a.warmup:
            total.append(t3 - t0)
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            step.append(t3 - t2)
    final_loss = float(loss.detach())
    # One more step, not timed, under the FLOP counter (forward and backward separately).
    from torch.utils.flop_counter import FlopCounterMode
    opt.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counted_forward:
        counted_loss = F.cross_entropy(model(x), y)
    with FlopCounterMode(display=False) as counted_backward:
        counted_loss.backward()
    if final_loss != final_loss:
        raise SystemExit("the loss diverged; the timings would not be representative")
    med = statistics.median(total)
    out = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "model": a.model,
        "width": width,
        "norm": a.norm,
        "batch": a.batch,
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "warmup": a.warmup,
        "steps": a.steps,
        "median_s": med,
        "min_s": min(total),
        "max_s": max(total),
        "forward_s": statistics.median(fwd),
        "backward_s": statistics.median(bwd),
        "optimizer_s": statistics.median(step),
        "images_per_s": a.batch / med,
        "peak_rss_mb": proc_status_mb("VmHWM"),
        "base_rss_mb": base_rss_mb,
        "final_loss": final_loss,
        "flops_forward": counted_forward.get_total_flops(),
        "flops_backward": counted_backward.get_total_flops(),
    }
    if gpu:
        out["device"] = a.device
        out["gpu"] = torch.cuda.get_device_name(dev)
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        out["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    print(json.dumps(out))


if __name__ == "__main__":
    main()
