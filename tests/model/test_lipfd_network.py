"""LipFD network: shapes, batched backbone == reference loop, freezing, autocast, building blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avlips.model.lipfd import LipFD, LipFDConfig, LipFDOutput, build_lipfd
from avlips.model.resnet import resnet18, resnet50
from avlips.model.vit import LayerNorm, QuickGELU, build_vit


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_forward_shapes_tiny_real_crop_size(tiny_model: LipFD) -> None:
    gen = torch.Generator().manual_seed(3)
    out = tiny_model(torch.randn(1, 3, 1120, 1120, generator=gen), torch.randn(1, 15, 3, 224, 224, generator=gen))
    assert isinstance(out, LipFDOutput)
    assert out.logit.shape == (1,)
    assert out.weight_max.shape == (1, 5) and out.weight_org.shape == (1, 5)
    assert torch.isfinite(out.logit).all()
    # Softmax over three scales: the max is at least 1/3 and never below the scale-0 weight.
    assert (out.weight_max >= 1 / 3 - 1e-6).all()
    assert (out.weight_max >= out.weight_org).all()


def test_head_dimensions_follow_backbone_and_encoder() -> None:
    tiny = build_lipfd(encoder="vit-tiny", backbone="resnet18", device="meta")
    assert tiny.backbone.fc.in_features == 512 + 64
    assert tiny.backbone.get_weight[0].in_features == 512 + 64
    assert isinstance(tiny.backbone.get_weight[1], nn.Sigmoid)
    full = build_lipfd(device="meta")
    assert full.backbone.fc.in_features == 2816 and full.backbone.fc.out_features == 1
    assert full.global_size == 1120


def test_batched_backbone_equals_reference_loop(tiny_model: LipFD, make_inputs) -> None:
    tiny_model.eval()
    global_input, crops = make_inputs(batch=2, crop=48)
    with torch.no_grad():
        batched = tiny_model(global_input, crops)
        loop = tiny_model.forward_loop(global_input, crops)
        feats_batched = tiny_model.crop_features(crops, batched=True)
        feats_loop = tiny_model.crop_features(crops, batched=False)
    assert feats_batched.shape == (2, 5, 3, 512)
    assert _rel_diff(feats_batched, feats_loop) < 1e-5
    assert feats_batched.std(dim=(0, 1, 2)).mean() > 1e-3  # crops really differ, so order mistakes would show
    for a, b in zip(batched, loop):
        assert _rel_diff(a, b) < 1e-5
    # And the order matters: swapping two frames' crops changes the per-frame weights.
    swapped = crops.clone()
    swapped[:, 0:3], swapped[:, 3:6] = crops[:, 3:6], crops[:, 0:3]
    with torch.no_grad():
        out = tiny_model(global_input, swapped)
    assert torch.allclose(out.weight_org[:, 0], batched.weight_org[:, 1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.weight_org[:, 0], batched.weight_org[:, 0])


def test_batched_flag_comes_from_config(make_inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_lipfd(encoder="vit-tiny", backbone="resnet18", batched_backbone=False).eval()
    calls: list[int] = []
    original = model.backbone.features
    monkeypatch.setattr(model.backbone, "features", lambda x: calls.append(x.shape[0]) or original(x))
    global_input, crops = make_inputs(batch=2, crop=32)
    with torch.no_grad():
        model(global_input, crops)
        assert calls == [2] * 15  # one call per crop
        calls.clear()
        model(global_input, crops, batched=True)
    assert calls == [30]  # all B*15 crops in one call


def test_head_matches_hand_computation(tiny_model: LipFD) -> None:
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 5, 3, 512, generator=gen)
    glob = torch.randn(2, 64, generator=gen)
    out = tiny_model.head(feats, glob)
    lin, fc = tiny_model.backbone.get_weight[0], tiny_model.backbone.fc
    logits = []
    for b in range(2):
        frame_vectors = []
        for i in range(5):
            vecs = [torch.cat([feats[b, i, j], glob[b]]) for j in range(3)]
            raw = torch.stack([torch.sigmoid(lin(v))[0] for v in vecs])
            w = torch.softmax(raw, dim=0)
            assert torch.allclose(out.weight_max[b, i], w.max(), atol=1e-6)
            assert torch.allclose(out.weight_org[b, i], w[0], atol=1e-6)
            frame_vectors.append(sum(w[j] * vecs[j] for j in range(3)) / w.sum())
        logits.append(fc(torch.stack(frame_vectors).mean(0))[0])
    assert torch.allclose(out.logit, torch.stack(logits), rtol=1e-5, atol=1e-5)


def test_freeze_encoder_only_freezes_encoder(make_inputs) -> None:
    torch.manual_seed(0)
    model = build_lipfd(encoder="vit-tiny", backbone="resnet18", freeze_encoder=True)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.conv1.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())
    global_input, crops = make_inputs(batch=2, crop=32)
    model(global_input, crops).logit.sum().backward()
    # conv1 sits before the frozen encoder: gradients must still reach it through the encoder.
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad is not None
    assert model.backbone.get_weight[0].weight.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())
    model.set_encoder_frozen(False)
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_unfrozen_by_default() -> None:
    model = build_lipfd(encoder="vit-tiny", backbone="resnet18", device="meta")
    assert all(p.requires_grad for p in model.parameters())


def test_autocast_bf16_cpu(tiny_model: LipFD, make_inputs) -> None:
    tiny_model.eval()
    global_input, crops = make_inputs(batch=2, crop=32)
    with torch.no_grad():
        ref = tiny_model(global_input, crops)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_model(global_input, crops)
    assert torch.isfinite(low.logit).all()
    assert torch.allclose(low.logit.float(), ref.logit, rtol=0.1, atol=0.1)
    assert torch.allclose(low.weight_max.float(), ref.weight_max, atol=0.02)


def test_config_round_trip_and_validation() -> None:
    cfg = LipFDConfig(encoder="vit-tiny", backbone="resnet18", freeze_encoder=True)
    assert LipFDConfig.from_dict(cfg.to_dict()) == cfg
    assert build_lipfd(cfg.to_dict(), device="meta").config == cfg
    assert build_lipfd(cfg, device="meta", backbone="resnet50").config.backbone == "resnet50"
    with pytest.raises(ValueError, match="unknown backbone"):
        LipFDConfig(backbone="resnet101")
    with pytest.raises(ValueError, match="unknown encoder"):
        LipFDConfig(encoder="vit-h14")
    with pytest.raises(ValueError, match="LipFDConfig: unknown key 'bakbone'"):
        LipFDConfig.from_dict({"encoder": "vit-tiny", "bakbone": "resnet18"})


def test_input_shape_errors(tiny_model: LipFD) -> None:
    with pytest.raises(ValueError, match="global_input"):
        tiny_model(torch.zeros(1, 3, 224, 224), torch.zeros(1, 15, 3, 32, 32))
    with pytest.raises(ValueError, match="crops"):
        tiny_model(torch.zeros(1, 3, 1120, 1120), torch.zeros(1, 5, 3, 32, 32))
    with pytest.raises(ValueError, match="batch sizes"):
        tiny_model(torch.zeros(2, 3, 1120, 1120), torch.zeros(1, 15, 3, 32, 32))


def test_clip_l14_vision_shapes_and_names() -> None:
    with torch.device("meta"):
        vit = build_vit("clip-vit-l14")
    sd = vit.state_dict()
    assert sd["conv1.weight"].shape == (1024, 3, 14, 14) and "conv1.bias" not in sd
    assert sd["positional_embedding"].shape == (257, 1024)
    assert sd["proj"].shape == (1024, 768)
    assert sd["transformer.resblocks.23.attn.in_proj_weight"].shape == (3072, 1024)
    assert sd["transformer.resblocks.23.mlp.c_fc.weight"].shape == (4096, 1024)
    assert "transformer.resblocks.24.ln_1.weight" not in sd
    out = vit(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.shape == (2, 768)


def test_vit_tiny_forward_and_size_check() -> None:
    torch.manual_seed(0)
    vit = build_vit("vit-tiny")
    assert vit(torch.randn(2, 3, 224, 224)).shape == (2, 64)
    with pytest.raises(ValueError, match="224x224"):
        vit(torch.randn(1, 3, 112, 112))
    with pytest.raises(ValueError, match="unknown ViT"):
        build_vit("vit-giant")


def test_quick_gelu_and_fp32_layernorm() -> None:
    x = torch.tensor([-2.0, 0.0, 1.0])
    assert torch.allclose(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    ln = LayerNorm(8)
    xb = (torch.randn(4, 8) * 100 + 1000).to(torch.bfloat16)
    y = ln(xb)
    assert y.dtype == torch.bfloat16
    # Computed in float32: the same result as normalising the float32 copy, rounded once.
    expected = torch.nn.functional.layer_norm(xb.float(), (8,)).to(torch.bfloat16)
    assert torch.equal(y, expected)


def test_resnet_torchvision_names_and_features() -> None:
    r18 = resnet18().to("meta")
    keys = set(r18.state_dict())
    names = ["conv1.weight", "bn1.running_mean", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight"]
    assert set(names) <= keys
    assert not any(k.startswith("layer1.0.downsample") for k in keys)  # BasicBlock layer1 keeps the width
    assert not any(k.startswith("fc.") for k in keys)  # no classifier by default
    r50 = resnet50(num_classes=1000).to("meta")
    sd50 = r50.state_dict()
    assert sd50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd50["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    assert sd50["fc.weight"].shape == (1000, 2048)
    assert r50.num_features == 2048 and r18.num_features == 512
    torch.manual_seed(0)
    assert resnet18().eval().features(torch.randn(2, 3, 64, 64)).shape == (2, 512)
