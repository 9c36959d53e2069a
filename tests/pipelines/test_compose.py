"""The compose stage: windows, the reference layout, deterministic resumable shards, bad inputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.frames import iter_frames
from avlips.media.probe import frame_times
from avlips.media.sample import AUDIO_CONTEXT_KEYS, WindowSample
from avlips.media.windows import window_starts
from avlips.pipelines.compose import run_compose
from avlips.pipelines.shards import iter_tar_samples
from avlips.pipelines.storage import write_parquet
from tests.builders import clip_row, compose_params, gradient_frames, pinned_ffmpeg, talking_clip, tone, write_vfr_video


@pytest.fixture(scope="module")
def talking_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("talking")
    return [talking_clip(root / f"c{i}.mp4", seed=i + 1) for i in range(4)]


def test_window_starts_cover_long_videos_without_wrapping():
    starts = window_starts(1000, 10, 5)
    assert starts[0] == 0 and starts[-1] == 994 and len(starts) == 10
    assert starts == sorted(starts)  # the reference's uint8 cast would wrap past 255
    assert window_starts(7, 10, 5) == [0, 1]
    assert window_starts(5, 10, 5) == [0]
    assert window_starts(4, 10, 5) == []


def _reference_composite(video: Path, audio: Path, start: int) -> np.ndarray:
    """The reference preprocessing (docs/reference-lipfd.md), written plainly."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = list(iter_frames(video))
    signal_, _ = librosa.load(str(audio), sr=22050)
    mel = librosa.feature.melspectrogram(y=signal_, sr=22050)
    mel_db = librosa.power_to_db(mel, ref=np.min)
    png = video.with_suffix(".mel.png")
    plt.imsave(str(png), mel_db)
    mel_rgb = cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ratio = mel_rgb.shape[1] / len(frames)
    strip = mel_rgb[:, int(round(start * ratio)):int(round((start + 5) * ratio))]
    strip = cv2.resize(strip, (2500, 500))
    row = np.concatenate([cv2.resize(frames[start + i], (500, 500)) for i in range(5)], axis=1)
    return np.concatenate([strip, row], axis=0)


def test_render_matches_reference_algorithm(tmp_path, talking_clips):
    from avlips.pipelines.render_sample import find_sample, render_to_png

    video = talking_clips[0]
    wav = tmp_path / "speech.wav"
    write_wav(wav, read_audio(video, 16000), 16000)
    params = compose_params(tmp_path, [clip_row("c0", video, "a", audio_path=str(wav))], frame_size=500, n_windows=3)
    run_compose(str(tmp_path / "shards"), params)
    samples = pd.read_parquet(tmp_path / "shards" / "samples.parquet")
    assert len(samples) == 3
    for row in samples.itertuples():
        out = tmp_path / f"{row.key}.png"
        render_to_png(str(tmp_path / "shards" / "test-{000000..000000}.tar"), row.key, str(out))
        ours = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
        reference = _reference_composite(video, wav, int(row.frame_indices[0]))
        assert ours.shape == reference.shape == (1000, 2500, 3)
        mad = np.abs(ours.astype(float) - reference.astype(float)).mean(axis=(0, 1))
        assert (mad <= 2.0).all(), (row.key, mad)
        # The two halves agree on their own, not only on average.
        assert np.abs(ours[:500].astype(float) - reference[:500]).mean() <= 2.0
    sample = find_sample(str(tmp_path / "shards" / "test-000000.tar"), samples.key[0])
    assert sample.frames.shape == (5, 500, 500, 3) and sample.mel_db.dtype == np.float32


def test_samples_hold_the_contracted_fields(tmp_path, talking_clips):
    params = compose_params(tmp_path, [clip_row("c0", talking_clips[0], "a", label=1)])
    run_compose(str(tmp_path / "s"), params)
    tars = sorted((tmp_path / "s").glob("*.tar"))
    found = [WindowSample.decode(k, m) for t in tars for k, m in iter_tar_samples(t.read_bytes())]
    assert sorted(s.key for s in found) == [f"c0_w{i:02d}" for i in range(4)]
    for sample in found:
        assert sample.label == 1 and sample.frames.shape == (5, 64, 64, 3)
        assert sample.mel_db.shape[0] == 128 and 3 <= sample.mel_db.shape[1] <= 12
        meta = sample.meta
        assert meta["clip"] == "c0" and meta["identity"] == "a" and len(meta["frame_indices"]) == 5
        assert meta["perturbation"] == {"type": "none", "level": 0}
        assert meta["end_time"] > meta["start_time"] and meta["fps"] == pytest.approx(25.0)
        assert set(AUDIO_CONTEXT_KEYS) <= set(meta["audio"]) and sample.audio.dtype == np.int16
        assert len(sample.audio) == (2 * 9600 + meta["audio"]["window_samples"] - meta["audio"]["cut_before"]
                                     - meta["audio"]["cut_after"])
    # What the shards were made from, for the provenance of a model trained on them.
    assert json.loads((tmp_path / "s" / "compose_stats.json").read_text())["corpus"] == {"sources": ["test"]}


def _shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.suffix in (".tar", ".parquet") or p.name == "compose_stats.json"}


def test_same_bytes_for_one_or_two_workers(tmp_path, talking_clips):
    rows = [clip_row(f"c{i}", p, f"id{i % 2}") for i, p in enumerate(talking_clips)]
    params = compose_params(tmp_path, rows)
    run_compose(str(tmp_path / "one"), params)
    run_compose(str(tmp_path / "two"), params, workers=2)
    one, two = _shard_bytes(tmp_path / "one"), _shard_bytes(tmp_path / "two")
    assert len([n for n in one if n.endswith(".tar")]) == 6  # 16 windows / 3 per shard
    assert one == two
    assert not [p for p in (tmp_path / "one").iterdir() if ".tmp-" in p.name]
    # Whole videos in a shard: every window of a clip is where the clip is.
    samples = pd.read_parquet(tmp_path / "one" / "samples.parquet")
    assert samples.groupby("clip")["shard"].nunique().eq(1).all() and len(samples) == 16


def test_videos_placed_whole_and_evenly_whatever_their_order():
    from avlips.pipelines.compose import ComposeConfig, place_videos
    from avlips.media.windows import WindowConfig

    config = ComposeConfig(windows=WindowConfig(n_windows=10), samples_per_shard=200)
    videos = [{"video_id": f"v{i:03d}", "split": "train" if i % 4 else "val"} for i in range(130)]
    placed = place_videos(videos, config)
    # 97 train videos: 970 windows in 5 shards of 19 or 20 videos; 33 val videos: 2 shards of 16 or 17.
    assert sorted(placed) == [f"train-{i:06d}" for i in range(5)] + ["val-000000", "val-000001"]
    assert sorted(len(group) for group in placed.values()) == [16, 17, 19, 19, 19, 20, 20]
    assert sorted(v["video_id"] for group in placed.values() for v in group) == [v["video_id"] for v in videos]
    assert all(v["split"] == name.split("-")[0] for name, group in placed.items() for v in group)
    assert place_videos(videos[::-1], config) == placed
    # A few videos for many shards: the shards past them stay empty, and are still listed.
    few = place_videos(videos[1:4], ComposeConfig(windows=WindowConfig(n_windows=4), samples_per_shard=3))
    assert [len(few[name]) for name in sorted(few)] == [1, 1, 1, 0]  # 3 train videos, 12 windows, 4 shards


def test_a_finished_shard_counts_only_with_the_videos_placed_there_now(tmp_path):
    from avlips.pipelines.compose import _finished_shards

    placed = {"test-000000": [{"video_id": "a"}], "test-000001": [{"video_id": "b"}], "test-000002": []}
    for name, videos in (("test-000000", ["a"]), ("test-000001", ["c"]), ("test-000002", [])):
        (tmp_path / f"{name}.tar").write_bytes(b"")
        (tmp_path / f"{name}_stats.json").write_text(json.dumps({"videos": videos}))
    # test-000001 holds another video (an earlier run from other inputs): composed again.
    assert _finished_shards(str(tmp_path), placed) == {"test-000000", "test-000002"}
    (tmp_path / "test-000002_stats.json").write_text('{"vid')  # cut by a kill: not finished
    assert _finished_shards(str(tmp_path), placed) == {"test-000000"}


def test_resume_after_losing_shards_gives_the_same_bytes(tmp_path, talking_clips):
    rows = [clip_row(f"c{i}", p, f"id{i}") for i, p in enumerate(talking_clips)]
    params = compose_params(tmp_path, rows)
    run_compose(str(tmp_path / "full"), params)
    reference = _shard_bytes(tmp_path / "full")
    # An interrupted run: one shard never finished (no stats), another left a half-written temp file.
    lost = tmp_path / "full" / "test-000002_stats.json"
    lost.unlink()
    (tmp_path / "full" / "test-000002.tar").write_bytes(b"garbage from a killed writer")
    (tmp_path / "full" / "test-000003.tar.tmp-deadbeef").write_bytes(b"partial")
    finished = (tmp_path / "full" / "test-000001_stats.json").stat().st_mtime_ns
    run_compose(str(tmp_path / "full"), params)
    assert _shard_bytes(tmp_path / "full") == reference
    assert (tmp_path / "full" / "test-000001_stats.json").stat().st_mtime_ns == finished  # skipped


def test_killed_run_keeps_its_finished_shards_and_ends_with_the_same_bytes(tmp_path, talking_clips):
    """Shards finish one by one: kill a run once one holds samples; the rerun keeps it and gives the same bytes."""
    import yaml

    rows = [clip_row(f"c{i}", p, f"id{i}") for i, p in enumerate(talking_clips * 2)]
    params = compose_params(tmp_path, rows)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_compose(str(tmp_path / "whole"), params)
    total = len(list((tmp_path / "whole").glob("*_stats.json")))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "avlips", "--params", str(tmp_path / "params.yaml"), "compose", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)

    def with_samples() -> list[Path]:
        return [p for p in out.glob("*_stats.json") if json.loads(p.read_text())["samples"]]

    deadline = time.time() + 120
    while not with_samples() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*_stats.json")}
    assert with_samples() and len(kept) < total, (len(kept), total)  # killed part-way, some shards done
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"({len(kept)} finished" in finished.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # skipped, not rewritten
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "whole")


def test_bad_and_awkward_inputs(tmp_path, talking_clips):
    root = tmp_path / "in"
    root.mkdir()
    good = talking_clips[1]
    frames = np.stack(list(iter_frames(good)))
    audio = read_audio(good, 16000)
    cases = {}
    write_video(root / "no_audio.mp4", frames, 25)
    cases["no_audio"] = ("fail", "NoAudio")
    write_video(root / "short.mp4", frames[:4], 25, audio[:2000], 16000)
    cases["short"] = ("fail", "TooShort")
    write_video(root / "silent.mp4", frames, 25, np.zeros_like(audio), 16000)
    cases["silent"] = ("fail", "MediaError")
    write_video(root / "audio_short.mp4", frames, 25, audio[: len(audio) // 2], 16000)
    cases["audio_short"] = ("partial", "TooShort")  # windows past the audio's end fail, the rest compose
    write_video(root / "audio_long.mp4", frames, 25, np.concatenate([audio, audio]), 16000)
    cases["audio_long"] = ("ok", None)
    subprocess.run([pinned_ffmpeg(), "-loglevel", "error", "-display_rotation", "90", "-i", str(good), "-c", "copy",
                    str(root / "rotated.mp4")], check=True)
    cases["rotated"] = ("ok", None)
    write_video(root / "hevc.mp4", frames, 25, audio, 16000, codec="libx265")
    cases["hevc"] = ("ok", None)
    big = np.stack([cv2.resize(f, (1920, 1080)) for f in frames[:30]])
    write_video(root / "big.mp4", big, 25, audio[: int(30 / 25 * 16000)], 16000, preset="ultrafast")
    cases["big"] = ("ok", None)
    whole = good.read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    cases["truncated"] = ("fail", "TruncatedMedia")
    rows = []
    for name in cases:
        path = root / f"{name}.mp4"
        try:
            rows.append(clip_row(name, path, name))
        except Exception:  # truncated: the corpus stage would have caught it; compose must too
            rows.append({**clip_row("x", good, name), "clip_id": name, "path": str(path)})
    params = compose_params(tmp_path, rows, samples_per_shard=50)
    totals = run_compose(str(tmp_path / "s"), params)
    samples = pd.read_parquet(tmp_path / "s" / "samples.parquet")
    failures = pd.read_parquet(tmp_path / "s" / "failures.parquet")
    assert totals["inputs"] == totals["videos_composed"] + totals["video_failures"] == len(cases)
    composed = set(samples["clip"])
    for name, (outcome, error) in cases.items():
        mine = failures[failures["input"].str.contains(f"/{name}.mp4")]
        if outcome == "ok":
            assert name in composed and mine.empty, (name, mine.to_dict("records"))
        elif outcome == "partial":
            assert name in composed and not mine.empty and set(mine["error"]) == {error}
        else:
            assert name not in composed and len(mine) == 1, name
            if error:
                assert mine["error"].iloc[0] == error, mine.to_dict("records")
    rotated = [WindowSample.decode(k, m) for t in sorted((tmp_path / "s").glob("*.tar"))
               for k, m in iter_tar_samples(t.read_bytes()) if k.startswith("rotated")]
    assert rotated and rotated[0].meta["frame_indices"] == [0, 1, 2, 3, 4]


def test_clips_whose_denoising_failed_never_compose_with_raw_audio(tmp_path, talking_clips):
    """Even when the denoise stage failed every clip: an empty audio.parquet is not a missing one."""
    from avlips.pipelines.compose import compose_inputs
    from avlips.pipelines.denoise import AUDIO_SCHEMA

    params = compose_params(tmp_path, [clip_row(f"c{i}", p, f"id{i}") for i, p in enumerate(talking_clips[:2])])
    audio = tmp_path / "audio.parquet"
    params["compose"]["audio"] = str(audio)
    write_parquet(str(audio), [], AUDIO_SCHEMA)
    assert compose_inputs(params) == []
    write_parquet(str(audio), [{"clip_id": "c1", "path": str(tmp_path / "c1.wav")}], AUDIO_SCHEMA)
    assert [(v["video_id"], v["audio_path"]) for v in compose_inputs(params)] == [("c1", str(tmp_path / "c1.wav"))]
    params["compose"]["audio"] = ""  # no denoise stage: each clip keeps its own audio
    assert [v["audio_path"] for v in compose_inputs(params)] == ["", ""]


def test_a_fake_whose_target_clip_is_gone_is_skipped_not_a_crash(tmp_path, talking_clips):
    """fakes.parquet older than a rerun corpus: that fake has no identity or split; the rest compose."""
    import logging

    from avlips.pipelines.compose import compose_inputs
    from avlips.pipelines.synthesize import FAKE_SCHEMA

    params = compose_params(tmp_path, [clip_row("c0", talking_clips[0], "id0")])
    fakes = tmp_path / "fakes.parquet"
    params["compose"]["fakes"] = str(fakes)
    write_parquet(str(fakes), [{"fake_id": f"f-{t}", "path": str(talking_clips[1]), "target_clip": t,
                                "driving_audio": "", "generator": "g"} for t in ("c0", "gone")], FAKE_SCHEMA)
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("avlips.compose").addHandler(handler)
    try:
        videos = compose_inputs(params)
    finally:
        logging.getLogger("avlips.compose").removeHandler(handler)
    assert [v["video_id"] for v in videos] == ["c0", "f-c0"]
    assert len(said) == 1 and "target clip gone" in said[0] and str(talking_clips[1]) in said[0]


def test_variable_frame_rate_windows_use_real_times(tmp_path):

    durations = [1, 2] * 30
    video = tmp_path / "vfr.mp4"
    write_vfr_video(video, durations)
    seconds = sum(durations) / 30
    wav = tmp_path / "vfr.wav"
    write_wav(wav, tone(seconds, 16000) * np.linspace(0.2, 1, int(seconds * 16000), dtype=np.float32), 16000)
    row = {**clip_row("vfr", video, "v"), "audio_path": str(wav)}
    run_compose(str(tmp_path / "s"), compose_params(tmp_path, [row]))
    samples = pd.read_parquet(tmp_path / "s" / "samples.parquet").sort_values("window")
    times = frame_times(video)
    for sample in samples.itertuples():
        assert sample.start_time == pytest.approx(times[sample.frame_indices[0]])


def test_dask_cluster_gives_the_same_bytes(tmp_path, talking_clips):
    distributed = pytest.importorskip("distributed")
    rows = [clip_row(f"c{i}", p, f"id{i % 2}") for i, p in enumerate(talking_clips[:2])]
    params = compose_params(tmp_path, rows)
    run_compose(str(tmp_path / "local"), params)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        run_compose(str(tmp_path / "dask"), params, runner="DaskRunner",
                    beam_args=(f"--dask_client_address={cluster.scheduler_address}",))
    assert _shard_bytes(tmp_path / "dask") == _shard_bytes(tmp_path / "local")


def test_each_window_stores_its_audio_with_context_at_the_frames_times(tmp_path):
    """audio.npy: the window's span of the (denoised) 16 kHz track plus 0.6 s either side, cut where the clip is."""
    rate, fps, frames = 16000, 25, 40  # 1.6 s; windows start at frames 0, 11, 22, 34
    video = tmp_path / "clicks.mp4"
    write_video(video, gradient_frames(frames, 64, 64), fps)
    track = tone(frames / fps, rate, freq=300.0) * 0.1
    click = int(0.7 * rate)  # one loud sample at 0.7 s
    track[click] = 0.9
    wav = tmp_path / "clicks.wav"
    write_wav(wav, track, rate)
    run_compose(str(tmp_path / "s"), compose_params(tmp_path, [{**clip_row("k", video, "k"), "audio_path": str(wav)}]))
    found = sorted((WindowSample.decode(k, m) for t in sorted((tmp_path / "s").glob("*.tar"))
                    for k, m in iter_tar_samples(t.read_bytes())), key=lambda s: s.meta["window"])
    assert [s.meta["frame_indices"][0] for s in found] == [0, 11, 22, 34]
    context = int(0.6 * rate)
    for sample in found:
        place, audio = sample.meta["audio"], sample.audio
        assert audio is not None and audio.dtype == np.int16
        first, last = round(sample.meta["start_time"] * rate), round(sample.meta["end_time"] * rate)
        assert first == round(sample.meta["frame_indices"][0] / fps * rate)
        assert place["sample_rate"] == rate and place["context_s"] == pytest.approx(0.6)
        assert place["window_samples"] == last - first == 5 * rate // fps
        # The clip's start and end cut the context; what is kept is exactly the track's samples.
        assert place["cut_before"] == max(0, context - first)
        assert place["cut_after"] == max(0, last + context - len(track))
        assert place["window_start"] == context - place["cut_before"]
        assert len(audio) == 2 * context + (last - first) - place["cut_before"] - place["cut_after"]
        begin = first - place["window_start"]
        expected = np.round(track[begin:begin + len(audio)] * 32767).astype(np.int16)
        assert np.abs(audio.astype(int) - expected).max() <= 1
        if begin <= click < begin + len(audio):
            assert int(np.argmax(np.abs(audio))) == click - begin == place["window_start"] + click - first
        else:
            assert np.abs(audio).max() < 0.2 * 32767
    assert found[0].meta["audio"]["cut_before"] == context and found[0].meta["audio"]["cut_after"] == 0
    assert found[-1].meta["audio"]["cut_after"] == context - (len(track) - round(1.56 * rate))  # 8960


def test_no_audio_field_when_the_context_is_switched_off(tmp_path, talking_clips):
    run_compose(str(tmp_path / "s"), compose_params(tmp_path, [clip_row("c0", talking_clips[0], "a")], audio_context_s=None))
    for tar in sorted((tmp_path / "s").glob("*.tar")):
        for key, members in iter_tar_samples(tar.read_bytes()):
            assert "audio.npy" not in members and WindowSample.decode(key, members).audio is None
