"""The streaming loader: shapes and input modes, brace notation, node/worker splits, bad input, resume cursors."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from avlips.media.render import render_sample
from avlips.media.render_fast import render_sample_fast
from avlips.media.sample import WindowSample
from avlips.model.composite_inputs import fast_path_available
from avlips.model.inputs import prepare_inputs
from avlips.model.loader_process import this_process
from avlips.model.loader import LipFDStream, LoaderConfig, LoaderStats, batch_inputs, composite_inputs, expand_shards, make_loader

# The CPU fast path (numba kernels of torch's bilinear formula) against torch itself: torch's own CPU
# results move by up to ~5e-5 (0..255 scale) between 1 and 2 threads, so "equal" means within these.
ATOL = {"reference_compatible": 1e-4, "normalized": 2e-6}


def _sample(key: str, label: int, seed: int) -> WindowSample:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (5, 24, 24, 3), dtype=np.uint8)
    mel = rng.normal(-40, 10, (128, 8)).astype(np.float32)
    meta = {"clip": key.split("_w")[0], "mel_db_min": -80.0, "mel_db_max": 0.0}
    return WindowSample(key, frames, mel, label, meta)


def write_shards(root: Path, shards: int, per_shard: int, prefix: str = "train") -> list[Path]:
    """Tar shards of small random samples, keys `s<shard>c<n>_w00`; returns their paths."""
    import tarfile
    import io

    paths = []
    for s in range(shards):
        path = root / f"{prefix}-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for n in range(per_shard):
                key = f"s{s}c{n}_w00"
                for name, data in sorted(_sample(key, (s + n) % 2, s * 100 + n).encode().items()):
                    info = tarfile.TarInfo(f"{key}.{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch.keys]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, shards=4, per_shard=3)
    return root


def _one_pass(**kw) -> LoaderConfig:
    base = dict(batch_size=2, shuffle=False, repeat=False, drop_last=False, crop_size=224)
    base.update(kw)
    return LoaderConfig(**base)


@pytest.mark.parametrize("mode", ["reference_compatible", "normalized"])
def test_batches_match_the_reference_preparation(shards, mode):
    url = str(shards / "train-000000.tar")
    batch = next(iter(make_loader(url, _one_pass(input_mode=mode))))
    assert batch.global_input.shape == (2, 3, 1120, 1120) and batch.crops.shape == (2, 15, 3, 224, 224)
    # Channels-last memory: the layout the network's strided global conv reads cheapest on the CPU.
    assert batch.global_input.is_contiguous(memory_format=torch.channels_last)
    assert batch.labels.dtype == torch.float32 and batch.keys == ["s0c0_w00", "s0c1_w00"]
    # The same tensors as rendering the stored sample and preparing it alone.
    sample = _sample("s0c1_w00", 1, 1)
    sample = WindowSample.decode(sample.key, sample.encode())  # the JPEG round trip the shard went through
    expected = prepare_inputs(render_sample(sample), mode=mode)
    torch.testing.assert_close(batch.global_input[1:], expected.global_input, rtol=0, atol=ATOL[mode])
    torch.testing.assert_close(batch.crops[1:], expected.crops, rtol=0, atol=ATOL[mode])
    if mode == "reference_compatible":
        assert batch.global_input.max() > 200  # BGR 0..255, not normalised
    else:
        assert batch.global_input.abs().max() < 3


def test_device_resize_equals_collate_resize_and_small_crops(shards):
    url = str(shards / "train-000001.tar")
    collate = next(iter(make_loader(url, _one_pass(crop_size=64))))
    device_cfg = _one_pass(crop_size=64, resize_on="device")
    deferred = next(iter(make_loader(url, device_cfg)))
    assert deferred.global_input is None and deferred.composites.shape == (2, 1000, 2500, 3)
    global_input, crops = batch_inputs(deferred, device_cfg, "cpu")
    assert crops.shape == (2, 15, 3, 64, 64)
    torch.testing.assert_close(global_input, collate.global_input, rtol=0, atol=0)
    torch.testing.assert_close(crops, collate.crops, rtol=0, atol=0)


def test_brace_notation_lists_and_reads_every_shard(shards):
    spec = str(shards / "train-{000000..000003}.tar")
    assert [Path(u).name for u in expand_shards(spec)] == [f"train-{i:06d}.tar" for i in range(4)]
    keys = _keys(make_loader(spec, _one_pass()))
    assert sorted(keys) == sorted(f"s{s}c{n}_w00" for s in range(4) for n in range(3))


@pytest.mark.parametrize("per_shard_split", [True, False])
def test_ranks_and_workers_read_disjoint_parts(tmp_path, shards, per_shard_split):
    # 4 shards over 2 ranks x 2 workers: one shard each; 2 shards: the per-sample fallback.
    spec = str(shards / ("train-{000000..000003}.tar" if per_shard_split else "train-{000000..000001}.tar"))
    cfg = _one_pass(num_workers=2, shuffle=True, shuffle_buffer=4, shuffle_initial=2, batch_size=1)
    per_rank = [_keys(make_loader(spec, cfg, rank=r, world_size=2)) for r in range(2)]
    expected = {f"s{s}c{n}_w00" for s in range(4 if per_shard_split else 2) for n in range(3)}
    assert not set(per_rank[0]) & set(per_rank[1])
    assert len(per_rank[0]) == len(set(per_rank[0])) and set(per_rank[0]) | set(per_rank[1]) == expected


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_truncated_shard_and_missing_field_are_skipped_and_counted(tmp_path):
    import tarfile

    write_shards(tmp_path, shards=3, per_shard=3)
    # Shard 1 cut in the middle of its second sample; shard 2's first sample loses its mel.
    data = (tmp_path / "train-000001.tar").read_bytes()
    (tmp_path / "train-000001.tar").write_bytes(data[: len(data) * 5 // 10])
    with tarfile.open(tmp_path / "train-000002.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tmp_path / "train-000002.tar", "w") as tar:
        import io

        for info, payload in members:
            if info.name != "s2c0_w00.mel.npy":
                tar.addfile(info, io.BytesIO(payload))
    handler = _Collect()
    logging.getLogger("avlips.loader").addHandler(handler)
    try:
        stream = LipFDStream(str(tmp_path / "train-{000000..000002}.tar"), _one_pass(batch_size=1, crop_size=32))
        keys = [k for batch in stream for k in batch.keys]
    finally:
        logging.getLogger("avlips.loader").removeHandler(handler)
    assert {"s0c0_w00", "s0c1_w00", "s0c2_w00", "s2c1_w00", "s2c2_w00"} <= set(keys)
    assert "s2c0_w00" not in keys
    stats = stream.stats
    assert stats.shard_errors == 1 and stats.skipped_samples >= 2  # the cut sample and the mel-less one
    assert stats.samples == len(keys)
    assert any("train-000001.tar" in m for m in handler.messages)
    assert any("s2c0_w00" in m and "train-000002.tar" in m and "mel.npy" in m for m in handler.messages)


def test_a_stream_restarted_from_a_cursor_continues_exactly(shards):
    spec = str(shards / "train-{000000..000003}.tar")
    cfg = LoaderConfig(batch_size=2, shuffle_buffer=5, shuffle_initial=3, crop_size=32, seed=7)
    full = LipFDStream(spec, cfg)
    batches = [b for _, b in zip(range(9), full)]  # crosses an epoch boundary (6 batches per epoch)
    cut = 4
    resumed = LipFDStream(spec, cfg, start={0: batches[cut - 1].cursor})
    again = [b for _, b in zip(range(9 - cut), resumed)]
    assert [b.keys for b in again] == [b.keys for b in batches[cut:]]
    assert batches[7].cursor[0] == 1  # the second epoch
    assert [b.keys for b in batches[6:9]] != [b.keys for b in batches[0:3]]  # epochs reshuffle


def test_train_time_perturbation_is_loaded_lazily_and_applied(shards, monkeypatch):
    calls = []

    def random_window_perturbation(sample, probability, salt=0, **types):
        calls.append((sample.key, probability, salt, types))
        sample.frames = np.zeros_like(sample.frames)
        return sample, {"type": "stub", "level": 1}

    monkeypatch.setitem(sys.modules, "avlips.perturbations.random_mode",
                        types.SimpleNamespace(random_window_perturbation=random_window_perturbation))
    url = str(shards / "train-000000.tar")
    batch = next(iter(make_loader(url, _one_pass(perturb_probability=0.5, crop_size=32))))
    assert calls[0] == ("s0c0_w00", 0.5, 0, {})  # no types given: the random mode's own six video types
    assert float(batch.crops.abs().max()) == 0.0  # frames replaced by the stub's black ones
    assert batch.stats["perturbed"] == 2
    calls.clear()
    next(iter(make_loader(url, _one_pass(perturb_probability=1.0, crop_size=32, perturb_types=("opus", "call")))))
    assert calls[0][3] == {"types": ("opus", "call")}


def _stored(path: Path) -> list[tuple[str, dict]]:
    """(key, members) of a shard's samples, in order."""
    import tarfile

    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, name = member.name.split(".", 1)
            samples.setdefault(key, {})[name] = tar.extractfile(member).read()
    return list(samples.items())


def test_train_time_perturbation_of_the_video_types_is_the_reference_random_mode(shards):
    from avlips.perturbations.random_mode import random_perturbation

    url = str(shards / "train-000000.tar")
    perturbed = next(iter(make_loader(url, _one_pass(perturb_probability=1.0, crop_size=32))))
    expected = [WindowSample.decode(k, v) for k, v in _stored(shards / "train-000000.tar")[:2]]
    for sample in expected:
        sample.frames = random_perturbation(sample.frames, sample.key, 1.0, salt=0)[0]
    inputs = composite_inputs(torch.from_numpy(np.stack([render_sample_fast(s) for s in expected])), _one_pass(crop_size=32))
    np.testing.assert_allclose(perturbed.crops.numpy(), inputs[1].numpy(), atol=ATOL["reference_compatible"])


def test_train_time_perturbation_types_are_checked_and_an_audio_draw_needs_audio(shards, caplog):
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['opsu'\]"):
        LoaderConfig(perturb_types=("opsu",))
    url = str(shards / "train-000000.tar")
    with caplog.at_level(logging.WARNING):
        batches = list(make_loader(url, _one_pass(perturb_probability=1.0, crop_size=32, perturb_types=("mp3",))))
    assert not batches  # these old samples carry no audio context: each skipped, naming why
    assert "s0c0_w00" in caplog.text and "audio" in caplog.text


def _composites(count: int, side: int, seed: int) -> np.ndarray:
    """Rendered composites of random windows with side x side frames (RGB uint8, (count, 1000, 2500, 3))."""
    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        frames = rng.integers(0, 256, (5, side, side, 3), dtype=np.uint8)
        mel = rng.normal(-40, 10, (128, 9)).astype(np.float32)
        out.append(render_sample(WindowSample(f"c{n}", frames, mel, 0, {"mel_db_min": -80.0, "mel_db_max": 0.0})))
    return np.stack(out)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["reference_compatible", "normalized"])
def test_cpu_fast_path_equals_prepare_inputs(mode, threads):
    assert fast_path_available()  # numba is installed here: the fast path must be the one tested
    composites = _composites(2, 500, seed=threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        expected = prepare_inputs(composites, mode=mode)
        for crop_size in (224, 64, 32, 16):  # small crops come straight from the frames (resize_kernels.small_crops)
            cfg = LoaderConfig(input_mode=mode, crop_size=crop_size)
            global_input, crops = composite_inputs(torch.from_numpy(composites), cfg, "cpu")
            assert global_input.shape == (2, 3, 1120, 1120) and global_input.dtype == torch.float32
            assert crops.shape == (2, 15, 3, crop_size, crop_size) and crops.is_contiguous()
            torch.testing.assert_close(global_input, expected.global_input, rtol=0, atol=ATOL[mode])
            want = expected.crops
            if crop_size != 224:
                want = torch.nn.functional.interpolate(want.flatten(0, 1), size=(crop_size, crop_size), mode="bilinear",
                                                       align_corners=False).reshape(2, 15, 3, crop_size, crop_size)
            torch.testing.assert_close(crops, want, rtol=0, atol=ATOL[mode])
    finally:
        torch.set_num_threads(before)


def test_composite_inputs_falls_back_to_torch(monkeypatch):
    composites = torch.from_numpy(_composites(1, 64, seed=5))
    cfg = LoaderConfig(crop_size=224)
    monkeypatch.setattr(this_process, "fast_path", False)  # as if the first-use check had failed
    global_input, crops = composite_inputs(composites, cfg, "cpu")
    expected = prepare_inputs(composites)
    torch.testing.assert_close(global_input, expected.global_input, rtol=0, atol=0)
    torch.testing.assert_close(crops, expected.crops, rtol=0, atol=0)


@pytest.mark.parametrize("side", [(24, 24), (500, 500), (360, 640)])
def test_loader_render_equals_media_render(side):
    rng = np.random.default_rng(side[0])
    for span in ((-80.0, 0.0), (-20.0, -20.0)):
        frames = rng.integers(0, 256, (5, *side, 3), dtype=np.uint8)
        sample = WindowSample("k", frames, rng.normal(-40, 10, (128, 7)).astype(np.float32), 1,
                              {"mel_db_min": span[0], "mel_db_max": span[1]})
        assert np.array_equal(render_sample_fast(sample), render_sample(sample))
        reused = np.full((1000, 2500, 3), 7, np.uint8)  # a buffer holding another window's composite
        assert render_sample_fast(sample, out=reused) is reused
        assert np.array_equal(reused, render_sample(sample))


def test_worker_batches_kept_by_the_trainer_are_never_overwritten(tmp_path):
    # Workers refill a batch buffer only once the trainer has dropped it: keeping every batch of a pass
    # (many more than the prefetch depth) must give the same tensors as the in-process loader.
    write_shards(tmp_path, shards=2, per_shard=8)
    spec = str(tmp_path / "train-{000000..000001}.tar")
    for resize_on in ("collate", "device"):
        cfg = _one_pass(batch_size=2, crop_size=32, resize_on=resize_on)
        expected = {b.keys[0]: b for b in make_loader(spec, cfg)}
        kept = list(make_loader(spec, _one_pass(batch_size=2, crop_size=32, resize_on=resize_on, num_workers=2)))
        assert sorted(b.keys[0] for b in kept) == sorted(expected) and len(kept) == 8
        for batch in kept:
            want = expected[batch.keys[0]]
            for name in ("global_input", "crops", "composites"):
                if getattr(want, name) is not None:
                    assert torch.equal(getattr(batch, name), getattr(want, name)), (resize_on, name, batch.keys)
        assert max(b.stats["shared_buffers"] for b in kept) >= 4  # each worker needed a buffer per kept batch


def test_worker_batch_buffers_are_reused_once_dropped(tmp_path):
    write_shards(tmp_path, shards=2, per_shard=12)
    cfg = _one_pass(batch_size=1, crop_size=32, num_workers=2, prefetch_factor=2)
    buffers = [b.stats["shared_buffers"] for b in make_loader(str(tmp_path / "train-{000000..000001}.tar"), cfg)]
    assert len(buffers) == 24
    # A worker has at most prefetch_factor batches queued plus one being consumed: 12 batches, few buffers.
    assert max(buffers) <= 4


@pytest.fixture
def http_root(shards):
    """The shard folder served over http on the loopback interface (webdataset fetches with curl)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_and_pipe_shards_read_like_local_files(shards, http_root):
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("webdataset fetches http shards with curl, which this machine lacks")
    local = _keys(make_loader(str(shards / "train-{000000..000001}.tar"), _one_pass(crop_size=32)))
    over_http = _keys(make_loader(f"{http_root}/train-{{000000..000001}}.tar", _one_pass(crop_size=32)))
    piped = _keys(make_loader([f"pipe:cat {shards / 'train-000000.tar'}", f"pipe:cat {shards / 'train-000001.tar'}"],
                              _one_pass(crop_size=32)))
    assert over_http == local and piped == local and len(local) == 6

    # A missing shard (http 404, a failing command) is skipped with a warning naming it, and counted.
    handler = _Collect()
    logging.getLogger("avlips.loader").addHandler(handler)
    try:
        stream = LipFDStream([f"{http_root}/train-000009.tar", f"{http_root}/train-000000.tar",
                              f"pipe:cat {shards / 'missing.tar'}"], _one_pass(crop_size=32))
        keys = [k for batch in stream for k in batch.keys]
    finally:
        logging.getLogger("avlips.loader").removeHandler(handler)
    assert keys == local[:3] and stream.stats.shard_errors == 2
    assert any("train-000009.tar" in m for m in handler.messages)
    assert any("missing.tar" in m for m in handler.messages), handler.messages


def test_spawned_workers_where_there_is_no_forkserver_give_the_same_batches(tmp_path, monkeypatch):
    import multiprocessing

    write_shards(tmp_path, shards=2, per_shard=4)
    spec = str(tmp_path / "train-{000000..000001}.tar")
    expected = {b.keys[0]: b for b in make_loader(spec, _one_pass(batch_size=2, crop_size=32))}
    monkeypatch.setattr(this_process, "worker_context", lambda: multiprocessing.get_context("spawn"))
    kept = list(make_loader(spec, _one_pass(batch_size=2, crop_size=32, num_workers=2)))
    assert sorted(b.keys[0] for b in kept) == sorted(expected)
    for batch in kept:
        assert torch.equal(batch.global_input, expected[batch.keys[0]].global_input)
        assert torch.equal(batch.crops, expected[batch.keys[0]].crops)


def test_windows_of_dropped_videos_are_left_out_and_counted(shards):
    stream = LipFDStream(str(shards / "train-{000000..000003}.tar"),
                         _one_pass(crop_size=32, exclude_clips=("s1c0", "s3c2", "not-in-these-shards")))
    keys = _keys(stream)
    assert len(keys) == 10 and "s1c0_w00" not in keys and "s3c2_w00" not in keys
    assert (stream.stats.excluded, stream.stats.skipped_samples, stream.stats.samples) == (2, 0, 10)
    merged = LoaderStats.merge([stream.stats.to_dict(), stream.stats.to_dict()])
    assert merged.excluded == 4
