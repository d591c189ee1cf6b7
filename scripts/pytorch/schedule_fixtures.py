#!/usr/bin/env python3
"""PyTorch reference fixtures for explr-schedule (torch.optim.SGD + torch.optim.lr_scheduler).

Rerun from the repository root (CPU, float64, no network):

    python3 scripts/pytorch/schedule_fixtures.py

It writes crates/schedule/tests/fixtures/torch_sgd.safetensors. The safetensors metadata holds
the torch version and, under "cases", each case's schedule spec (in explr's YAML/JSON schema)
and optimizer settings; crates/schedule/tests/torch_parity.rs reads both. Each case runs 1000
steps of torch.optim.SGD with two parameter groups on a fixed quadratic
L(θ) = ½ θᵀAθ − bᵀθ (gradient set to A·θ − b), stepping the scheduler after the optimizer,
and records the LR of every update (group 0) and the parameters after every 4th update.
"""
import json
import math
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file

STEPS = 1000
EVERY = 4  # parameters are recorded after updates EVERY, 2·EVERY, …, STEPS (keeps the file small)
LR = 0.1
OUT = pathlib.Path("crates/schedule/tests/fixtures/torch_sgd.safetensors")

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20200401)
q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
A = q @ np.diag(np.linspace(0.5, 5.0, 6)) @ q.T
A = (A + A.T) / 2
b = rng.standard_normal(6)
w0 = rng.standard_normal((2, 2))
c0 = rng.standard_normal(2)


def cosine(t_max, eta_min, lr=LR):
    return {"kind": "cosine", "lr": lr, "t_max": t_max, "eta_min": eta_min}


def warmup(total, lr=LR):
    return {"kind": "warmup", "lr": lr, "start_factor": 0.1, "end_factor": 1.0, "total_iters": total}


# (name, explr spec, torch scheduler factory, momentum, dampening, nesterov, wd of group a)
S = torch.optim.lr_scheduler
CASES = [
    ("constant_plain", {"kind": "constant", "lr": LR}, lambda o: S.ConstantLR(o, factor=1.0, total_iters=0), 0.0, 0.0, False, 0.0),
    ("step_dampening", {"kind": "step", "lr": LR, "step_size": 100, "gamma": 0.5},
     lambda o: S.StepLR(o, step_size=100, gamma=0.5), 0.9, 0.1, False, 5e-4),
    ("multistep_momentum_wd", {"kind": "multistep", "lr": LR, "milestones": [300, 600, 900], "gamma": 0.1},
     lambda o: S.MultiStepLR(o, milestones=[300, 600, 900], gamma=0.1), 0.9, 0.0, False, 5e-4),
    ("exponential_decay_nesterov", {"kind": "exponential", "lr": LR, "factor": 0.997},
     lambda o: S.ExponentialLR(o, gamma=0.997), 0.9, 0.0, True, 1e-3),
    ("exponential_growth", {"kind": "exponential", "lr": 0.01, "factor": 1.001},
     lambda o: S.ExponentialLR(o, gamma=1.001), 0.5, 0.0, False, 5e-4),
    ("cosine_nesterov", cosine(1000, 1e-3), lambda o: S.CosineAnnealingLR(o, T_max=1000, eta_min=1e-3), 0.9, 0.0, True, 5e-4),
    ("cosine_periodic", cosine(300, 1e-3), lambda o: S.CosineAnnealingLR(o, T_max=300, eta_min=1e-3), 0.9, 0.0, False, 5e-4),
    ("warmup", warmup(50), lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=50), 0.9, 0.0, False, 5e-4),
    ("sequential_warmup_cosine",
     {"kind": "sequential", "schedules": [warmup(50), cosine(950, 1e-3)], "milestones": [50]},
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=50),
                                  S.CosineAnnealingLR(o, T_max=950, eta_min=1e-3)], milestones=[50]),
     0.9, 0.0, False, 5e-4),
]
LR_SCALE_B = 0.5
# torch's eta_min is not scaled with a group's base LR, so for cosine the second group is not a
# multiple of the first: explr gives it its own schedule (GroupLr::Schedule) in these cases.
SCHEDULE_B = {
    "cosine_nesterov": cosine(1000, 1e-3, LR * LR_SCALE_B),
    "cosine_periodic": cosine(300, 1e-3, LR * LR_SCALE_B),
    "sequential_warmup_cosine": {"kind": "sequential", "milestones": [50], "schedules": [
        warmup(50, LR * LR_SCALE_B), cosine(950, 1e-3, LR * LR_SCALE_B)]},
}

tensors = {
    "A": torch.tensor(A), "b": torch.tensor(b), "init.a.weight": torch.tensor(w0), "init.b.bias": torch.tensor(c0),
}
meta_cases = []
At, bt = torch.tensor(A), torch.tensor(b)
for name, spec, make, momentum, dampening, nesterov, wd in CASES:
    lr0 = spec.get("lr", LR)
    wa = torch.tensor(w0).clone().requires_grad_(True)
    cb = torch.tensor(c0).clone().requires_grad_(True)
    opt = torch.optim.SGD(
        [{"params": [wa], "lr": lr0, "weight_decay": wd}, {"params": [cb], "lr": lr0 * LR_SCALE_B, "weight_decay": 0.0}],
        lr=lr0, momentum=momentum, dampening=dampening, nesterov=nesterov, foreach=False)
    sched = make(opt)
    lrs, traj = [], []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        with torch.no_grad():
            theta = torch.cat([wa.flatten(), cb])
            g = At @ theta - bt
            wa.grad = g[:4].reshape(2, 2).clone()
            cb.grad = g[4:].clone()
        opt.step()
        sched.step()
        if len(lrs) % EVERY == 0:
            traj.append(torch.cat([wa.detach().flatten(), cb.detach()]).clone())
    tensors[f"{name}.lr"] = torch.tensor(lrs)
    tensors[f"{name}.theta"] = torch.stack(traj)
    meta_cases.append({"name": name, "schedule": spec, "momentum": momentum, "dampening": dampening,
                       "nesterov": nesterov, "weight_decay_a": wd, "lr_scale_b": LR_SCALE_B,
                       "schedule_b": SCHEDULE_B.get(name)})

OUT.parent.mkdir(parents=True, exist_ok=True)
save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT), metadata={
    "torch_version": torch.__version__, "steps": str(STEPS), "every": str(EVERY), "cases": json.dumps(meta_cases)})
print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with torch {torch.__version__}")
