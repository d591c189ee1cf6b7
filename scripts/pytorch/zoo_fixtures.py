"""Fixtures for explr-zoo's tests: parameter counts and logit parity with the PyTorch twins.

Rerun from the repository root (CPU, a few seconds; needs torch and safetensors):

    python3 scripts/pytorch/zoo_fixtures.py

Writes crates/zoo/tests/fixtures/:
- zoo_fixtures.json: torch version, exact parameter counts of every model (full width), and
  the parity cases with their specs.
- <case>.weights.safetensors: the twin's state_dict (float32 values; the torch version is in
  the metadata). γ/β and the running statistics are set to random values so that they matter.
- <case>.io.safetensors: the input batch `x` (float32 values), and in float64 `logits_eval`, `logits_train` (one
  training-mode forward, batch statistics) and `after_train.<buffer>` (the running statistics
  that forward leaves behind).
Every weight is rounded to float32 and the model then runs in float64, so both sides compute
in float64 on exactly the same numbers while the files stay small.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_models import build, num_params  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "zoo",
                   "tests", "fixtures")

COUNT_CASES = (
    [dict(arch="preresnet", depth=d) for d in (20, 32, 56, 110)]
    + [dict(arch="resnet", depth=d) for d in (20, 32, 44, 56, 110)]
    + [dict(arch="vgg", depth=d) for d in (11, 13, 16, 19)]
    + [
        dict(arch="preresnet", depth=32, norm="none"),
        dict(arch="preresnet", depth=32, norm="gn:16"),
        dict(arch="preresnet", depth=32, norm="ln"),
        dict(arch="preresnet", depth=32, norm="in"),
        dict(arch="preresnet", depth=32, num_classes=100),
        dict(arch="resnet", depth=20, norm="none"),
        dict(arch="vgg", depth=16, norm="none"),
        dict(arch="vgg", depth=11, num_classes=100),
    ]
)

PARITY_CASES = {
    "preresnet32_bn_w4": dict(arch="preresnet", depth=32, width=4),
    "resnet20_bn_w4": dict(arch="resnet", depth=20, width=4),
    "vgg11_bn_w4": dict(arch="vgg", depth=11, width=4),
    "preresnet8_gn2_w4": dict(arch="preresnet", depth=8, width=4, norm="gn:2", num_classes=5),
    "resnet8_in_w4": dict(arch="resnet", depth=8, width=4, norm="in"),
    "vgg11_none_w2": dict(arch="vgg", depth=11, width=2, norm="none"),
}


def f32_round_(model):
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.float().double())


def randomize_norms_(model, gen):
    """γ, β and running statistics away from their init values, so the parity test sees them."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen, dtype=t.dtype))
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype))
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.GroupNorm,
                                torch.nn.InstanceNorm2d)) and mod.weight is not None:
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=gen,
                                                       dtype=mod.weight.dtype))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen,
                                                 dtype=mod.bias.dtype))


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {"torch_version": torch.__version__}
    torch.manual_seed(0)
    counts = []
    for case in COUNT_CASES:
        spec = dict(case)
        counts.append(dict(spec=spec, params=num_params(build(**spec))))
        if spec["arch"] == "vgg" and spec.get("norm", "bn") != "none":
            # kuangliu's VGG as published: every conv has a bias.
            counts[-1]["params_with_conv_bias"] = num_params(build(**spec, conv_bias=True))
    gen = torch.Generator().manual_seed(1234)
    parity = {}
    for name, spec in PARITY_CASES.items():
        torch.manual_seed(len(name))
        model = build(**spec).double()
        randomize_norms_(model, gen)
        f32_round_(model)
        sd = {k: (v.float() if v.is_floating_point() else v).contiguous()
              for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(OUT, f"{name}.weights.safetensors"), metadata=meta)
        x = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64).float().double()
        model.eval()
        with torch.no_grad():
            logits_eval = model(x)
        model.train()
        with torch.no_grad():
            logits_train = model(x)
        io = {"x": x.float(), "logits_eval": logits_eval, "logits_train": logits_train}
        for k, v in model.state_dict().items():
            if "running" in k:
                io[f"after_train.{k}"] = v.clone()
        save_file({k: v.contiguous() for k, v in io.items()},
                  os.path.join(OUT, f"{name}.io.safetensors"), metadata=meta)
        parity[name] = dict(spec=spec, params=num_params(model))
    with open(os.path.join(OUT, "zoo_fixtures.json"), "w") as f:
        json.dump(dict(torch_version=torch.__version__, counts=counts, parity=parity), f,
                  indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
