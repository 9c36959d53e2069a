"""Features kept by content: a miss on any changed value, a bound in bytes, and scores as if computed afresh."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avlips.media.sample import WindowSample
from avlips.model.checkpoints import save_checkpoint
from avlips.model.feature_cache import FeatureCache, content_key
from avlips.model.lipfd import LipFDConfig, build_lipfd
from avlips.model.lipfd_detector import LipFDDetector
from avlips.model.sync.detector import SyncDetector
from tests.model.sync_samples import talking_clip, window
from tests.model.test_sync_detector import expert_file  # noqa: F401  (a fixture)


def test_content_key_changes_with_any_value_shape_dtype_or_context():
    frames = np.zeros((5, 4, 4, 3), np.uint8)
    key = content_key(frames, context=(32,))
    assert key == content_key(frames.copy(), context=(32,))
    changed = frames.copy()
    changed[4, 3, 3, 2] = 1
    assert len({key, content_key(changed, context=(32,)), content_key(frames, context=(64,)),
                content_key(frames.reshape(5, 16, 3), context=(32,)),
                content_key(frames.astype(np.int16), context=(32,))}) == 5


def test_cache_is_bounded_in_bytes_and_drops_the_least_recently_used():
    cache = FeatureCache(max_bytes=3 * 400)  # three 100-float tensors
    for name in "abc":
        cache.put((name,), torch.zeros(100))
    assert cache.get(("a",)) is not None  # a is now the most recently used
    cache.put(("d",), torch.zeros(100))
    assert cache.get(("b",)) is None and cache.get(("a",)) is not None and len(cache) == 3
    cache.put(("huge",), torch.zeros(1000))  # larger than the bound: not kept, nothing evicted
    assert cache.get(("huge",)) is None and len(cache) == 3
    nothing = FeatureCache(0)
    nothing.put(("a",), torch.zeros(1))
    assert nothing.get(("a",)) is None


def _lipfd_file(tmp_path):
    torch.manual_seed(0)
    config = LipFDConfig(encoder="vit-tiny", backbone="resnet18")
    path = tmp_path / "lipfd.pt"
    save_checkpoint(path, build_lipfd(config), step=0, config=config,  # normalized: untrained logits stay small
                    extra={"train": {"input_mode": "normalized", "crop_size": 32}})
    return str(path)


def _window(key: str, seed: int) -> WindowSample:
    rng = np.random.default_rng(seed)
    meta = {"clip": key, "mel_db_min": -80.0, "mel_db_max": 0.0}
    return WindowSample(key, rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8),
                        rng.normal(-40, 10, (128, 8)).astype(np.float32), 0, meta)


def test_lipfd_reuses_crop_features_of_unchanged_frames_and_scores_as_afresh(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    weights = _lipfd_file(tmp_path)
    clean = _window("a", 1)
    other = _window("b", 2)
    audio_copy = dataclasses.replace(clean, key="a_opus1", mel_db=clean.mel_db + 3.0)  # other mel, same frames
    frames = clean.frames.copy()
    frames[2, 10, 10, 0] ^= 1  # one value of one frame
    video_copy = dataclasses.replace(clean, key="a_blur1", frames=frames)
    shared = LipFDDetector(model=weights, batch_size=2)
    import avlips.media.render_fast as render_fast
    rendered = {"strip": 0, "frames": 0}
    strip, frames_part = render_fast.render_strip, render_fast.render_frames

    def count(part, render):
        def counted(*args):
            rendered[part] += 1
            return render(*args)
        return counted

    monkeypatch.setattr(render_fast, "render_strip", count("strip", strip))
    monkeypatch.setattr(render_fast, "render_frames", count("frames", frames_part))
    together = [s.probability for s in shared.score([clean, other, audio_copy, video_copy])]
    # the audio copy's frames and the video copy's strip are not rendered: their parts' products are kept
    assert rendered == {"strip": 3, "frames": 3}
    assert (shared.crop_features.hits, shared.crop_features.misses) == (1, 3)
    alone = [next(iter(LipFDDetector(model=weights, batch_size=1).score([s]))).probability
             for s in (clean, other, audio_copy, video_copy)]
    assert together == pytest.approx(alone, abs=1e-6)
    assert together[2] != together[0]  # the mel changed the global view, so the score
    assert shared.global_conv1.rows_computed < shared.global_conv1.rows_total  # the copies' known bands reused
    off = LipFDDetector(model=weights, batch_size=2, feature_cache_mb=0, global_cache_mb=0)
    assert [s.probability for s in off.score([clean, audio_copy])] == pytest.approx(together[::2], abs=1e-6)


def test_sync_reuses_lip_embeddings_of_unchanged_frames(expert_file):  # noqa: F811
    frames, audio = talking_clip(5, seconds=1.6, size=48)
    clean = window("c", frames, audio, 16, index=0)
    other_audio = window("c", frames, np.roll(audio, 4000), 16, index=1)  # the same frames, other speech
    shared = SyncDetector(model=str(expert_file), batch_size=1)
    together = list(shared.score([clean, other_audio]))
    assert len(shared._face_cache) == 1 and len(shared._audio_cache) == 2
    alone = list(SyncDetector(model=str(expert_file)).score([other_audio]))[0]
    assert together[1].probability == pytest.approx(alone.probability, abs=1e-9)
    assert together[1].details == alone.details


def test_cache_size_settings_are_checked(tmp_path):
    from avlips.model.detectors import DetectorError

    with pytest.raises(DetectorError, match="feature_cache_mb"):
        LipFDDetector(model="x.pt", feature_cache_mb=-1)
    with pytest.raises(DetectorError, match="detectors.lipfd.global_cache_mb"):
        LipFDDetector(model="x.pt", global_cache_mb=1.5)
    with pytest.raises(DetectorError, match="feature_cache_mb"):
        SyncDetector(model="x.pt", feature_cache_mb="big")


def test_decoded_frames_are_reused_by_their_bytes_kept_while_room_and_read_only():
    from avlips.model.shard_samples import DecodedFrames, decode_window, frames_digest

    clean = _window("a", 1)
    members = clean.encode()
    other = _window("b", 2).encode()
    cache = DecodedFrames(clean.frames.nbytes)  # room for one window's frames
    first = decode_window("a", members, cache)
    again = decode_window("a_opus1", dict(members, **{"mel.npy": other["mel.npy"]}), cache)  # same frame bytes
    assert again.frames is first.frames and cache.hits == 1 and not first.frames.flags.writeable
    assert np.array_equal(again.mel_db, _window("b", 2).mel_db)  # the rest is its own
    third = decode_window("b", other, cache)  # no room: decoded, not kept, the first entry stays
    assert cache.get(frames_digest(other)) is None and cache.get(frames_digest(members)) is first.frames
    assert np.array_equal(third.frames, decode_window("b", other).frames)
    changed = dict(members, **{"f2.jpg": other["f2.jpg"]})  # one frame's bytes differ: decoded afresh
    assert decode_window("a_blur1", changed, cache, remember=False).frames is not first.frames
    cache.clear()
    assert cache.get(frames_digest(members)) is None


def test_lipfd_scores_windows_the_fast_render_does_not_take_beside_others_as_alone(tmp_path):
    """Float frames (render_sample makes the composite whole) and grey frames (it cannot: an abstention) in
    batches with windows the fast render takes in parts: each scores, or abstains, as it does alone."""
    torch.set_num_threads(1)
    weights = _lipfd_file(tmp_path)
    clean = _window("a", 1)
    floats = dataclasses.replace(_window("f", 3), frames=_window("f", 3).frames.astype(np.float32))
    grey = dataclasses.replace(_window("g", 4), frames=_window("g", 4).frames[..., 0])  # (5, 64, 64): no channels
    audio_copy = dataclasses.replace(clean, key="a_opus1", mel_db=clean.mel_db + 3.0)
    windows = [clean, floats, grey, audio_copy]
    together = list(LipFDDetector(model=weights, batch_size=2).score(windows))
    alone = [next(iter(LipFDDetector(model=weights, batch_size=1).score([s]))) for s in windows]
    assert [s.key for s in together] == ["a", "f", "g", "a_opus1"]
    assert together[1].probability is not None and "cannot render" in together[2].abstain_reason
    for got, want in zip(together, alone):
        assert got.abstain_reason == want.abstain_reason
        if want.probability is not None:
            assert got.probability == pytest.approx(want.probability, abs=1e-6)
