"""The split ResNet of Paper C: a *head* (stem + layer1) that runs before compression and a *tail*
(layer2..layer4 + global pooling) that runs on the decoded features.

- ``paper`` profile: torchvision's ``resnet50(weights=None)`` cut after ``layer1`` (f1 = 256 x H/4 x W/4);
- ``laptop`` profile: a narrow ResNet of torchvision ``BasicBlock``\\s with the standard stem (7x7 stride-2
  conv + 3x3 stride-2 max-pool), so f1 keeps the paper's stride 4 at any width.

The MoCo projection head (``fc`` of the official encoder) is :class:`ProjectionHead`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet50
from torchvision.models.resnet import BasicBlock


class BackboneHead(nn.Module):
    """Stem + layer1: image (B, 3, H, W) -> f1 (B, C1, H/4, W/4)."""

    def __init__(self, stem: nn.Module, layer1: nn.Module, out_channels: int):
        super().__init__()
        self.stem = stem
        self.layer1 = layer1
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.stem(x))


class BackboneTail(nn.Module):
    """layer2..layer4 (+ global average pooling in :meth:`pool`): f (B, C1, h, w) -> (B, C4, h/8, w/8)."""

    def __init__(self, layer2: nn.Module, layer3: nn.Module, layer4: nn.Module, out_channels: int):
        super().__init__()
        self.layer2, self.layer3, self.layer4 = layer2, layer3, layer4
        self.out_channels = int(out_channels)

    def forward(self, f: torch.Tensor, return_all: bool = False):
        """The layer4 map, or with ``return_all`` the list [layer2, layer3, layer4] outputs (stage 4's
        feature losses use them)."""
        outs = []
        for layer in (self.layer2, self.layer3, self.layer4):
            f = layer(f)
            outs.append(f)
        return outs if return_all else f

    @staticmethod
    def pool(f: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1)


class ProjectionHead(nn.Module):
    """MoCo's ``fc``: ``Linear(C4 -> dim)`` (MoCo v1), or with ``hidden`` > 0 MoCo v2's MLP
    ``Linear(C4 -> hidden), ReLU, Linear(hidden -> dim)``.  ``out`` is the last Linear either way."""

    def __init__(self, in_dim: int, dim: int = 128, hidden: int = 0):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True)) if hidden else nn.Identity()
        self.out = nn.Linear(hidden or in_dim, dim)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(v))


def _stem(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1))


def _basic_layer(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    layers = [BasicBlock(cin, cout, stride, down)]
    layers += [BasicBlock(cout, cout) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def build_backbone(kind: str = "resnet50", widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
    """(head, tail) of a ResNet.  ``kind="resnet50"``: torchvision's ResNet-50, untrained (``widths`` and
    ``blocks`` unused); ``kind="basic"``: BasicBlock layers of the given widths and block counts, the
    standard stem at ``widths[0]``.  Convolutions are initialised as torchvision's ResNet."""
    if kind == "resnet50":
        r = resnet50(weights=None)
        stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        return BackboneHead(stem, r.layer1, 256), BackboneTail(r.layer2, r.layer3, r.layer4, 2048)
    if kind != "basic":
        raise ValueError(f"backbone must be 'resnet50' or 'basic', got {kind!r}")
    widths, blocks = [int(w) for w in widths], [int(b) for b in blocks]
    if len(widths) != 4 or len(blocks) != 4:
        raise ValueError(f"a basic backbone needs 4 widths and 4 block counts, got {widths}, {blocks}")
    stem = _stem(widths[0])
    layers = [_basic_layer(widths[0], widths[0], blocks[0], 1)]
    layers += [_basic_layer(widths[i - 1], widths[i], blocks[i], 2) for i in range(1, 4)]
    head, tail = BackboneHead(stem, layers[0], widths[0]), BackboneTail(*layers[1:], widths[3])
    for m in (*head.modules(), *tail.modules()):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return head, tail
