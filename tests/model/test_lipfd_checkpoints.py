"""Checkpoints: the released key listing, the released file format, CLIP weights, our own training format."""

from __future__ import annotations

import gc
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from avlips.model.checkpoints import (
    CheckpointFormatError,
    CheckpointMismatchError,
    is_text_tower_key,
    load_checkpoint,
    load_clip_visual,
    load_reference_checkpoint,
    save_checkpoint,
)
from avlips.model.lipfd import LipFD, LipFDConfig, build_lipfd
from avlips.model.vit import build_vit

TSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "lipfd_state_dict.tsv"


def _reference_listing() -> dict[str, tuple[int, ...]]:
    if not TSV.exists():
        pytest.skip(f"{TSV} not found (needs ../shared beside the checkout)")
    shapes: dict[str, tuple[int, ...]] = {}
    for line in TSV.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shapes[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return shapes


def _fake_state(shapes: dict[str, tuple[int, ...]], device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64, device=device)
        elif device == "meta":
            state[key] = torch.empty(shape, device="meta")
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


# ------------------------------------------------------------------------------------- released format


def test_full_model_keys_and_shapes_equal_reference_listing() -> None:
    listing = _reference_listing()
    assert len(listing) == 770
    visual_and_heads = {k: v for k, v in listing.items() if not is_text_tower_key(k)}
    text = sorted(k for k in listing if is_text_tower_key(k))
    assert "encoder.token_embedding.weight" in text and "encoder.logit_scale" in text
    assert not any(k.startswith("encoder.visual.") for k in text)
    model = build_lipfd(LipFDConfig(encoder="clip-vit-l14", backbone="resnet50"), device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(visual_and_heads)) == []
    assert sorted(set(visual_and_heads) - set(ours)) == []
    assert {k: s for k, s in ours.items() if s != visual_and_heads[k]} == {}


@pytest.mark.slow
def test_fake_released_checkpoint_loads_strictly(tmp_path: Path) -> None:
    listing = _reference_listing()
    state = _fake_state(listing)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": state, "optimizer": {}, "total_steps": 5}, path)

    model, report = load_reference_checkpoint(path)
    assert isinstance(model, LipFD)
    assert report.total_steps == 5 and not report.stripped_prefix
    assert report.unused == sorted(k for k in listing if is_text_tower_key(k))
    assert len(report.loaded) == 620
    loaded = model.state_dict()
    for key in report.loaded:
        assert torch.equal(loaded[key], state[key]), key
    assert model.backbone.fc.weight.requires_grad and not model.conv1.weight.is_meta
    del model, loaded
    gc.collect()

    # A bare state dict with DataParallel's prefix, into an existing model (memory allocated, not initialised).
    target = build_lipfd(device="meta").to_empty(device="cpu")
    bare = {"module." + k: v for k, v in state.items()}
    same, report2 = load_reference_checkpoint(bare, model=target)
    assert same is target and report2.stripped_prefix and report2.total_steps is None
    assert torch.equal(target.encoder.visual.proj, state["encoder.visual.proj"])
    assert torch.equal(target.backbone.get_weight[0].weight, state["backbone.get_weight.0.weight"])
    assert torch.equal(target.conv1.weight, state["conv1.weight"])


def test_released_checkpoint_missing_unexpected_or_misshapen_keys_raise() -> None:
    listing = _reference_listing()
    state = _fake_state(listing, device="meta")  # shapes only: errors are raised before any copy

    missing = dict(state)
    del missing["backbone.layer3.2.bn2.running_var"]
    with pytest.raises(CheckpointMismatchError, match=r"backbone\.layer3\.2\.bn2\.running_var") as err:
        load_reference_checkpoint({"model": missing, "optimizer": {}, "total_steps": 1})
    assert err.value.missing == ["backbone.layer3.2.bn2.running_var"] and not err.value.unexpected

    wrong = dict(state)
    wrong["backbone.fc.weight"] = torch.empty(1, 2048, device="meta")
    expected = r"backbone\.fc\.weight \(checkpoint \[1, 2048\] vs model \[1, 2816\]\)"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_reference_checkpoint(wrong)

    extra = dict(state)
    extra["backbone.head2.weight"] = torch.empty(3, device="meta")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key\(s\): backbone\.head2\.weight"):
        load_reference_checkpoint(extra)

    visual_missing = {k: v for k, v in state.items() if k != "encoder.visual.ln_post.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.visual\.ln_post\.bias"):
        load_reference_checkpoint(visual_missing)


def test_reference_checkpoint_into_wrong_architecture_names_keys(tiny_model: LipFD) -> None:
    state = _fake_state(_reference_listing(), device="meta")
    with pytest.raises(CheckpointMismatchError) as err:
        load_reference_checkpoint(state, model=tiny_model)
    assert "encoder.visual.conv1.weight" in [k for k, _, _ in err.value.shape_mismatch]
    assert "462 unexpected key(s)" in str(err.value)
    assert "backbone.layer1.0.conv3.weight" in err.value.unexpected  # a Bottleneck key a resnet18 lacks


def test_reference_checkpoint_must_hold_tensors() -> None:
    with pytest.raises(CheckpointFormatError, match="not a tensor"):
        load_reference_checkpoint({"model": {"conv1.weight": [1, 2, 3]}, "total_steps": 1})


# ------------------------------------------------------------------------------------------ CLIP weights


def _clip_like_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    visual = build_vit("vit-tiny")
    state = {"visual." + k: v.detach().clone() for k, v in visual.state_dict().items()}
    state["token_embedding.weight"] = torch.randn(10, 8)
    state["logit_scale"] = torch.tensor(4.6)
    return state


def test_load_clip_visual_from_plain_state_dict(tmp_path: Path, tiny_model: LipFD) -> None:
    state = _clip_like_state(seed=11)
    half = {k: v.half() for k, v in state.items()}  # OpenAI ships fp16 weights
    torch.save(half, tmp_path / "clip.pt")
    before_backbone = tiny_model.backbone.conv1.weight.clone()
    report = load_clip_visual(tmp_path / "clip.pt", tiny_model)
    assert report.unused == ["logit_scale", "token_embedding.weight"]
    assert len(report.loaded) == len(tiny_model.encoder.visual.state_dict())
    assert tiny_model.encoder.visual.proj.dtype == torch.float32
    assert torch.equal(tiny_model.encoder.visual.proj, half["visual.proj"].float())
    assert torch.equal(tiny_model.encoder.visual.conv1.weight, half["visual.conv1.weight"].float())
    assert torch.equal(tiny_model.backbone.conv1.weight, before_backbone)  # nothing else touched


def test_load_clip_visual_from_torchscript_archive(tmp_path: Path, tiny_model: LipFD) -> None:
    state = _clip_like_state(seed=12)

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = build_vit("vit-tiny")
            self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Only the archive's parameters matter here; tracing keeps every submodule's tensors.
            return x * self.logit_scale

    holder = Holder()
    holder.load_state_dict({k: v for k, v in state.items() if k != "token_embedding.weight"})
    traced = torch.jit.trace(holder.eval(), torch.randn(2))
    torch.jit.save(traced, str(tmp_path / "ViT-tiny.pt"))
    report = load_clip_visual(tmp_path / "ViT-tiny.pt", tiny_model)
    assert report.unused == ["logit_scale"]
    assert torch.equal(tiny_model.encoder.visual.positional_embedding, state["visual.positional_embedding"])


def test_load_clip_visual_mismatch_and_format_errors(tmp_path: Path, tiny_model: LipFD) -> None:
    state = _clip_like_state(seed=13)
    state["visual.proj"] = torch.randn(64, 32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match=r"proj \(checkpoint \[64, 32\] vs model \[64, 64\]\)"):
        load_clip_visual(tmp_path / "bad.pt", tiny_model)
    torch.save({"transformer.x": torch.zeros(1)}, tmp_path / "text_only.pt")
    with pytest.raises(CheckpointFormatError, match="visual"):
        load_clip_visual(tmp_path / "text_only.pt", tiny_model)


# ----------------------------------------------------------------------------------------- own format


def _train_step(model: LipFD, optimizer: torch.optim.Optimizer) -> None:
    gen = torch.Generator().manual_seed(2)
    global_input, crops = torch.randn(2, 3, 1120, 1120, generator=gen), torch.randn(2, 15, 3, 32, 32, generator=gen)
    optimizer.zero_grad()
    out = model(global_input, crops)
    torch.nn.functional.binary_cross_entropy_with_logits(out.logit, torch.tensor([0.0, 1.0])).backward()
    optimizer.step()


def _draws() -> tuple[list[float], float, float]:
    return torch.rand(3).tolist(), float(np.random.rand()), random.random()


def test_own_checkpoint_round_trip(tmp_path: Path, tiny_model: LipFD) -> None:
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    _train_step(tiny_model, optimizer)
    scheduler.step()
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    extra = {"epoch": 1, "best": {"acc": 0.5}}
    path = save_checkpoint(tmp_path / "run" / "lipfd.pt", tiny_model, optimizer, scheduler, step=3, extra=extra)
    expected_draws = _draws()  # what the RNGs give right after the save
    _draws()

    assert sorted(p.name for p in path.parent.iterdir()) == ["lipfd.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["config"] == tiny_model.config.to_dict() and raw["step"] == 3

    torch.manual_seed(99)
    fresh = build_lipfd(tiny_model.config)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    assert not torch.equal(fresh.backbone.conv1.weight, tiny_model.backbone.conv1.weight)
    result = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
    assert result.step == 3 and result.extra == {"epoch": 1, "best": {"acc": 0.5}}
    assert result.config == tiny_model.config and result.rng_restored
    assert _draws() == expected_draws
    for (name, a), b in zip(tiny_model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh_sched.last_epoch == scheduler.last_epoch and fresh_opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    p_old, p_new = tiny_model.backbone.fc.weight, fresh.backbone.fc.weight
    assert torch.equal(optimizer.state[p_old]["exp_avg"], fresh_opt.state[p_new]["exp_avg"])

    # Without a model, the stored config rebuilds the right architecture.
    rebuilt = load_checkpoint(path, restore_rng=False).model
    assert isinstance(rebuilt, LipFD) and rebuilt.config == tiny_model.config
    assert torch.equal(rebuilt.encoder.visual.proj, tiny_model.encoder.visual.proj)


def test_checkpoint_of_other_architecture_is_a_clear_error(tmp_path: Path, tiny_model: LipFD) -> None:
    path = save_checkpoint(tmp_path / "r18.pt", tiny_model, step=1)
    other = build_lipfd(encoder="vit-tiny", backbone="resnet50", device="meta")
    with pytest.raises(CheckpointMismatchError, match=r"backbone: checkpoint 'resnet18' vs model 'resnet50'") as err:
        load_checkpoint(path, other)
    assert "backbone.layer1.0.conv3.weight" in err.value.missing
    assert "backbone.fc.weight" in [k for k, _, _ in err.value.shape_mismatch]


def test_load_checkpoint_format_errors(tmp_path: Path, tiny_model: LipFD) -> None:
    released = tmp_path / "released.pth"
    torch.save({"model": {"conv1.bias": torch.zeros(3)}, "optimizer": {}, "total_steps": 2}, released)
    with pytest.raises(CheckpointFormatError, match="load_reference_checkpoint"):
        load_checkpoint(released, tiny_model)
    path = save_checkpoint(tmp_path / "no_opt.pt", tiny_model)
    with pytest.raises(Exception, match="no optimizer state"):
        load_checkpoint(path, tiny_model, optimizer=torch.optim.SGD(tiny_model.parameters(), lr=0.1))


def test_a_file_that_is_no_torch_checkpoint_is_a_format_error_naming_it(tmp_path: Path,
                                                                         tiny_model: LipFD) -> None:
    saved = save_checkpoint(tmp_path / "good.pt", tiny_model).read_bytes()
    broken = {"notes.pt": b"hello, not a checkpoint\n", "empty.pt": b"", "cut.pt": saved[: len(saved) // 2]}
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointFormatError, match=f"{tmp_path / name}: not a readable PyTorch checkpoint"):
            load_checkpoint(tmp_path / name, tiny_model)
        with pytest.raises(CheckpointFormatError, match=name):
            load_reference_checkpoint(tmp_path / name)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match="holds a list"):
        load_reference_checkpoint(torch.load(tmp_path / "list.pt", weights_only=True))


def test_save_refuses_what_weights_only_cannot_load(tmp_path: Path, tiny_model: LipFD) -> None:
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "x.pt", tiny_model, extra={"when": object()})
    assert list(tmp_path.iterdir()) == []
