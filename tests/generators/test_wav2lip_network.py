"""The native Wav2Lip network: exact key/shape parity with the released checkpoint, and forward shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from avlips.generators.wav2lip.network import ConvUnit, TransposeConvUnit, Wav2Lip

torch.set_num_threads(2)

TSV = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "wav2lip_state_dict.tsv"
# sha256 of the tsv's data lines ("key<TAB>shape\n", in file order): pins the listing when the file is absent.
TSV_SHA256 = "670f683f594f77e11f8a988ba863ac58b81feacba0ff857ce4d876da4aace948"
N_TENSORS = 352
N_PARAMS = 36_298_035


def _listing(model: torch.nn.Module) -> list[tuple[str, str]]:
    return [
        (k, "scalar" if v.dim() == 0 else "x".join(str(d) for d in v.shape)) for k, v in model.state_dict().items()
    ]


@pytest.fixture(scope="module")
def model() -> Wav2Lip:
    torch.manual_seed(0)
    return Wav2Lip().eval()


def test_listing_matches_pinned_hash(model: Wav2Lip) -> None:
    text = "".join(f"{k}\t{s}\n" for k, s in _listing(model))
    assert len(_listing(model)) == N_TENSORS
    assert hashlib.sha256(text.encode()).hexdigest() == TSV_SHA256


@pytest.mark.skipif(not TSV.exists(), reason=f"{TSV} not present (the pinned-hash test still covers the listing)")
def test_keys_and_shapes_match_reference_tsv(model: Wav2Lip) -> None:
    ref = [tuple(line.rstrip("\n").split("\t")) for line in TSV.read_text().splitlines() if not line.startswith("#")]
    ref = [r for r in ref if r != ("",)]
    mine = _listing(model)
    ref_d, mine_d = dict(ref), dict(mine)
    assert sorted(set(ref_d) - set(mine_d)) == [], "keys in the checkpoint the model lacks"
    assert sorted(set(mine_d) - set(ref_d)) == [], "keys in the model the checkpoint lacks"
    assert {k: v for k, v in mine_d.items() if ref_d[k] != v} == {}, "shape mismatches"
    assert mine == ref  # same order too
    assert len(ref) == N_TENSORS


def test_parameter_count(model: Wav2Lip) -> None:
    assert sum(p.numel() for p in model.parameters()) == N_PARAMS


def test_residual_units_are_the_shape_preserving_3x3_ones(model: Wav2Lip) -> None:
    # Keys cannot show residual flags; the published design adds the input back in every unit
    # that keeps channels and size with a 3x3 stride-1 conv, and in no other.
    units = [m for m in model.modules() if isinstance(m, ConvUnit)]
    for u in units:
        conv = u.conv_block[0]
        keeps = conv.in_channels == conv.out_channels and conv.kernel_size == (3, 3)
        keeps = keeps and conv.stride == (1, 1) and conv.padding == (1, 1)
        assert u.residual == keeps, u
    assert sum(u.residual for u in units) == 28  # face encoder 10, audio encoder 7, decoder 11
    ups = [m.conv_block[0] for m in model.modules() if isinstance(m, TransposeConvUnit)]
    assert [(c.stride, c.padding, c.output_padding) for c in ups] == [((1, 1), (0, 0), (0, 0))] + [
        ((2, 2), (1, 1), (1, 1))
    ] * 5


def test_forward_shape_range_and_wiring(model: Wav2Lip) -> None:
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, args, output) -> None:
            seen[name + ".in"], seen[name + ".out"] = args[0], output

        return hook

    handles = [
        model.audio_encoder.register_forward_hook(keep("audio")),
        model.face_encoder_blocks[0].register_forward_hook(keep("enc0")),
        model.face_encoder_blocks[6].register_forward_hook(keep("enc6")),
        model.face_decoder_blocks[0].register_forward_hook(keep("dec0")),
        model.face_decoder_blocks[1].register_forward_hook(keep("dec1")),
        model.face_decoder_blocks[6].register_forward_hook(keep("dec6")),
        model.output_block.register_forward_hook(keep("outb")),
    ]
    torch.manual_seed(1)
    mel, face = torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    try:
        with torch.no_grad():
            out = model(mel, face)
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (2, 3, 96, 96)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0  # not a constant image
    # With random weights the audio's effect on the pixels is tiny, so check the wiring instead:
    # the audio embedding (B,512,1,1) starts the decoder, the face goes through the encoder, and
    # each decoder output is concatenated with the encoder feature of the same size.
    assert seen["audio.in"] is mel and seen["audio.out"].shape == (2, 512, 1, 1)
    assert seen["enc0.in"] is face and seen["enc0.out"].shape == (2, 16, 96, 96)
    assert torch.equal(seen["dec0.in"], seen["audio.out"])
    torch.testing.assert_close(seen["dec1.in"], torch.cat([seen["dec0.out"], seen["enc6.out"]], 1))
    torch.testing.assert_close(seen["outb.in"], torch.cat([seen["dec6.out"], seen["enc0.out"]], 1))
    assert seen["outb.in"].shape == (2, 80, 96, 96)
    assert torch.equal(seen["outb.out"], out)


def test_time_stacked_forward_matches_per_frame(model: Wav2Lip) -> None:
    torch.manual_seed(3)
    mel, face = torch.randn(2, 2, 1, 80, 16), torch.rand(2, 6, 2, 96, 96)
    with torch.no_grad():
        out = model(mel, face)
        assert out.shape == (2, 3, 2, 96, 96)
        one = model(mel[1:2, 1], face[1:2, :, 1])[0]
    torch.testing.assert_close(out[1, :, 1], one, atol=1e-5, rtol=1e-4)


def test_wrong_face_size_is_rejected(model: Wav2Lip) -> None:
    with torch.no_grad(), pytest.raises((ValueError, RuntimeError)):
        model(torch.randn(1, 1, 80, 16), torch.rand(1, 6, 64, 64))
