"""PyTorch twins of the explr-zoo models (imported by zoo_fixtures.py and zoo_bench.py).

Written from the structure of the references (not copied): bearpaw/pytorch-classification
`models/cifar/preresnet.py` (basic blocks), akamaster/pytorch_resnet_cifar10 `resnet.py`
(option-A shortcut), kuangliu/pytorch-cifar `models/vgg.py`. Module names, layer order, init
and shapes follow them, so `state_dict()` keys equal the references'. Two knobs the references
do not have: `norm` (bn | gn:G | ln | in | none) and `width` (channels of the first stage).
VGG convs have a bias only when no norm follows them (`conv_bias=None`); `conv_bias=True`
gives the reference's parameter count.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_norm(kind, channels, eps=1e-5):
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "ln":
        return nn.GroupNorm(1, channels, eps=eps)
    if kind == "in":
        return nn.InstanceNorm2d(channels, eps=eps, affine=True)
    if kind == "none":
        return nn.Identity()
    if kind.startswith("gn:"):
        return nn.GroupNorm(int(kind[3:]), channels, eps=eps)
    raise ValueError(kind)


class PreBasicBlock(nn.Module):
    def __init__(self, cin, planes, stride, norm, eps):
        super().__init__()
        self.bn1 = make_norm(norm, cin, eps)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes, eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=False))

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        res = x if self.downsample is None else self.downsample(x)
        return out + res


class PreResNet(nn.Module):
    def __init__(self, depth, num_classes=10, norm="bn", width=16, eps=1e-5):
        super().__init__()
        assert (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, padding=1, bias=False)
        cin = w
        for i, (planes, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(PreBasicBlock(cin, planes, stride if j == 0 else 1, norm, eps))
                cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn = make_norm(norm, cin, eps)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        x = x.mean(dim=(2, 3))  # AvgPool2d(8) on the 8x8 map of a 32x32 input
        return self.fc(x)


class BasicBlockA(nn.Module):
    def __init__(self, cin, planes, stride, norm, eps):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes, eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes, eps)
        self.pad = planes // 4 if (stride != 1 or cin != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad is None:
            short = x
        else:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        return F.relu(out + short)


class ResNet(nn.Module):
    def __init__(self, depth, num_classes=10, norm="bn", width=16, eps=1e-5):
        super().__init__()
        assert (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.bn1 = make_norm(norm, w, eps)
        cin = w
        for i, (planes, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlockA(cin, planes, stride if j == 0 else 1, norm, eps))
                cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


VGG_CFG = {
    11: [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    13: [1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    16: [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
    19: [1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"],
}


class VGG(nn.Module):
    def __init__(self, depth, num_classes=10, norm="bn", width=64, eps=1e-5, conv_bias=None):
        super().__init__()
        bias = (norm == "none") if conv_bias is None else conv_bias
        layers, cin = [], 3
        for item in VGG_CFG[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = item * width
                conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
                fan_out = 9 * cout
                conv.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
                layers += [conv, make_norm(norm, cout, eps), nn.ReLU(inplace=True)]
                cin = cout
        layers.append(nn.AvgPool2d(1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))


def default_width(arch):
    """The base width when none is given: 64 for VGG, 16 for the ResNets (explr-zoo's
    Arch::default_width)."""
    return 64 if arch == "vgg" else 16


def build(arch, depth, num_classes=10, norm="bn", width=None, eps=1e-5, **kw):
    cls = {"preresnet": PreResNet, "resnet": ResNet, "vgg": VGG}[arch]
    if width is None:
        width = default_width(arch)
    return cls(depth, num_classes=num_classes, norm=norm, width=width, eps=eps, **kw)


def num_params(model):
    return sum(p.numel() for p in model.parameters())
