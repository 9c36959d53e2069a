"""The ResNet's 3x3 convolutions over 1x1 maps (small crops) computed from the centre tap: same values and gradients."""

from __future__ import annotations

import torch
from torch import nn

from avlips.model import resnet


def _features_and_grads(net: resnet.ResNet, crops: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    features = net.features(crops)
    (features * torch.linspace(-1, 1, features.shape[1])).sum().backward()
    return features.detach(), [p.grad.clone() for p in net.parameters()]


def test_centre_tap_path_equals_the_convolution(monkeypatch):
    torch.manual_seed(3)
    net = resnet.resnet18().train()
    crops = torch.randn(6, 3, 32, 32)  # layer4 runs on 1x1 maps
    shortcut_calls = []
    real_linear = resnet.F.linear
    monkeypatch.setattr(resnet.F, "linear", lambda *a: shortcut_calls.append(1) or real_linear(*a))
    fast, fast_grads = _features_and_grads(net, crops)
    assert len(shortcut_calls) == 3  # layer4: block 0's conv2, block 1's conv1 and conv2
    monkeypatch.setattr(resnet, "_conv", lambda conv, x: conv(x))  # the plain convolutions
    plain, plain_grads = _features_and_grads(net, crops)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6)
    centre_only = net.layer4[1].conv1.weight.grad  # the last backward's: plain convs also give zeros off-centre
    assert torch.count_nonzero(centre_only[:, :, 0, 0]) == 0


def test_other_shapes_use_the_convolution():
    conv = nn.Conv2d(4, 5, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 4, 2, 2)
    assert torch.equal(resnet._conv(conv, x), conv(x))
    strided = nn.Conv2d(4, 5, kernel_size=3, stride=2, padding=1, bias=False)
    one = torch.randn(2, 4, 1, 1)
    assert torch.equal(resnet._conv(strided, one), strided(one))
