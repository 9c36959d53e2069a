"""The corpus stage end to end: sources, splits, bad inputs as failure rows, the CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.frames import iter_frames
from avlips.pipelines.corpus import run_corpus
from avlips.pipelines.failures import StageFailed
from avlips.pipelines.sources import SourceError, manifest_candidates
from avlips.pipelines.splits import assign_splits
from tests.builders import gradient_frames, pinned_ffmpeg, tone

PARAMS = {"seed": 7, "corpus": {"min_frames": 5, "require_audio": True, "max_failure_fraction": 0.9,
                                "splits": {"train": 0.5, "val": 0.25, "test": 0.25}}}


def _video(path, n=20, audio=True, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, gradient_frames(n, size[1], size[0]), 25, tone(n / 25, 16000) if audio else None)
    return path


@pytest.fixture
def messy_folder(tmp_path):
    """Good clips of four identities plus one of each kind of bad input."""
    root = tmp_path / "videos"
    for ident in ("alice", "bob", "carol", "dave"):
        _video(root / "0_real" / ident / "a.mp4")
        _video(root / "1_fake" / ident / "b.mp4")
    _video(root / "0_real" / "ünïcode" / "clip é.mp4")
    bad = root / "0_real" / "bad"
    bad.mkdir(parents=True)
    (bad / "notes.mp4").write_text("not a video at all")
    (bad / "page.html").write_text("<html></html>")
    whole = _video(tmp_path / "whole.mp4", n=60).read_bytes()
    (bad / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    _video(bad / "silent.mp4", audio=False)
    _video(bad / "short.mp4", n=3)
    (bad / "empty.mp4").write_bytes(b"")
    subprocess.run([pinned_ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=64x48:r=25",
                    "-frames:v", "0", "-c:v", "libx264", str(bad / "noframes.mp4")], check=True)
    os.symlink(bad / "missing.mp4", bad / "dangling.mp4")
    (bad / "ошибка.mp4").write_bytes(b"\x00" * 100)
    (root / "0_real" / "alice" / "a.wav").unlink(missing_ok=True)
    return root


def test_folder_source_records_every_bad_input(messy_folder, tmp_path):
    out = tmp_path / "corpus"
    stats = run_corpus(f"folder:{messy_folder}", str(out), PARAMS)
    clips = pd.read_parquet(out / "clips.parquet")
    failures = pd.read_parquet(out / "failures.parquet")
    assert stats["inputs"] == stats["clips"] + stats["failures"] == len(clips) + len(failures)
    assert len(clips) == 9
    by_name = {os.path.basename(p): e for p, e in zip(failures["input"], failures["error"])}
    assert by_name == {
        "notes.mp4": "NotAVideo", "page.html": "NotAVideo", "truncated.mp4": "TruncatedMedia",
        "silent.mp4": "NoAudio", "short.mp4": "TooShort", "empty.mp4": "NotAVideo",
        "noframes.mp4": "NotAVideo", "dangling.mp4": "UnreadableFile", "ошибка.mp4": "NotAVideo",
    }
    assert (failures["stage"] == "corpus").all()
    assert all(path in message for path, message in zip(failures["input"], failures["message"]))
    # Labels from the folder names, identity from the parent directory.
    assert sorted(clips.loc[clips.label == 1, "identity"]) == ["alice", "bob", "carol", "dave"]
    assert clips.loc[clips.identity == "ünïcode", "clip_id"].str.isascii().all()
    # No identity in two splits; every split present.
    assert clips.groupby("identity")["split"].nunique().max() == 1
    assert set(clips["split"]) == {"train", "val", "test"}
    assert (clips["frames"] == 20).all() and (clips["audio_source"] == "track").all()
    assert "ffmpeg" not in stats  # nothing encoded


def test_same_inputs_same_bytes_any_worker_count(messy_folder, tmp_path):
    run_corpus(f"folder:{messy_folder}", str(tmp_path / "one"), PARAMS)
    run_corpus(f"folder:{messy_folder}", str(tmp_path / "two"), PARAMS, workers=2)
    for name in ("clips.parquet", "failures.parquet", "corpus_stats.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_failure_threshold_stops_the_stage(messy_folder, tmp_path):
    strict = {**PARAMS, "corpus": {**PARAMS["corpus"], "max_failure_fraction": 0.1}}
    with pytest.raises(StageFailed, match="9 of 18 inputs failed"):
        run_corpus(f"folder:{messy_folder}", str(tmp_path / "c"), strict)
    # What was done is kept: the manifests are written before the threshold is checked.
    assert len(pd.read_parquet(tmp_path / "c" / "failures.parquet")) == 9


def test_avlips_layout_uses_wav_tree(tmp_path):
    root = tmp_path / "AVLips"
    _video(root / "0_real" / "0.mp4")
    _video(root / "1_fake" / "0.mp4")
    _video(root / "1_fake" / "1.mp4", audio=False)  # audio only in the wav tree
    (root / "wav" / "1_fake").mkdir(parents=True)
    write_wav(root / "wav" / "1_fake" / "1.wav", tone(0.8, 22050), 22050)
    run_corpus(f"avlips:{root}", str(tmp_path / "c"), PARAMS)
    clips = pd.read_parquet(tmp_path / "c" / "clips.parquet").set_index("identity")
    assert clips.loc["1_fake/1.mp4", "audio_source"] == "sidecar"
    assert clips.loc["1_fake/1.mp4", "audio_rate"] == 22050
    assert clips.loc["0_real/0.mp4", "audio_source"] == "track"
    assert list(clips.sort_index()["label"]) == [0, 1, 1]


def test_avlips_layout_must_have_label_dirs(tmp_path):
    with pytest.raises(SourceError, match="not the AVLips layout"):
        run_corpus(f"avlips:{tmp_path}", str(tmp_path / "c"), PARAMS)


def test_manifest_csv(tmp_path):
    _video(tmp_path / "v" / "x.mp4")
    _video(tmp_path / "v" / "y.mp4")
    pd.DataFrame({"path": ["v/x.mp4", "v/y.mp4", "v/missing.mp4"], "label": [0, 1, 0],
                  "identity": ["p1", "p1", "p2"]}).to_csv(tmp_path / "list.csv", index=False)
    stats = run_corpus(f"manifest:{tmp_path / 'list.csv'}", str(tmp_path / "c"), PARAMS)
    assert (stats["clips"], stats["failures"]) == (2, 1)
    clips = pd.read_parquet(tmp_path / "c" / "clips.parquet")
    assert clips["split"].nunique() == 1  # one identity, one split


def test_manifest_without_path_column(tmp_path):
    pd.DataFrame({"file": ["a.mp4"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SourceError, match="'path' column"):
        manifest_candidates(str(tmp_path / "bad.csv"))


def test_unknown_source_kind(tmp_path):
    with pytest.raises(SourceError, match="unknown source kind"):
        run_corpus("youtube:abc", str(tmp_path / "c"), PARAMS)


def test_a_source_with_no_inputs_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"x")  # hidden: not an input
    with pytest.raises(SourceError, match=f"folder:{empty}: no input files found"):
        run_corpus(f"folder:{empty}", str(tmp_path / "c"), PARAMS)


def test_splits_deterministic_and_disjoint():
    people = [f"p{i}" for i in range(200)]
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = assign_splits(people, fractions, seed=3, method="hash")
    assert first == assign_splits(list(reversed(people)), fractions, seed=3, method="hash")
    assert first != assign_splits(people, fractions, seed=4, method="hash")
    counts = pd.Series(first).value_counts()
    assert 130 < counts["train"] < 190 and counts["val"] > 5 and counts["test"] > 5
    # Hash splits do not move when identities are added.
    more = assign_splits(people + ["new1", "new2"], fractions, seed=3, method="hash")
    assert all(more[p] == first[p] for p in people)
    small = assign_splits(["a", "b", "c", "d"], fractions, seed=3, method="balanced")
    assert sorted(pd.Series(small).value_counts().to_dict().items()) == [("test", 1), ("train", 2), ("val", 1)]


def test_demo_corpus_is_deterministic(tmp_path):
    params = {"seed": 5, "corpus": {"splits": {"train": 0.5, "val": 0.25, "test": 0.25}},
              "demo": {"identities": 4, "clips_per_identity": 1, "duration_s": 1.2, "fps": 25, "size": 64}}
    stats = run_corpus("demo", str(tmp_path / "a"), params)
    run_corpus("demo", str(tmp_path / "b"), params)
    assert stats["ffmpeg"]["path"] == pinned_ffmpeg()  # the binary that encoded the demo clips
    clips = pd.read_parquet(tmp_path / "a" / "clips.parquet")
    assert len(clips) == 4 and set(clips["split"]) == {"train", "val", "test"}
    for name in sorted(os.listdir(tmp_path / "a" / "demo")):
        a, b = tmp_path / "a" / "demo" / name, tmp_path / "b" / "demo" / name
        assert np.array_equal(np.stack(list(iter_frames(a))), np.stack(list(iter_frames(b))))
        assert np.array_equal(read_audio(a), read_audio(b))


def test_demo_mouth_follows_the_audio(tmp_path):
    """Real demo clips are in sync: the mouth region's darkness tracks the loudness envelope."""
    from avlips.media.synthetic import envelope_at_frames

    params = {"seed": 1, "demo": {"identities": 1, "clips_per_identity": 1, "duration_s": 4.0, "size": 96}}
    run_corpus("demo", str(tmp_path / "c"), {**params, "corpus": {"splits": {"train": 1.0}}})
    clip = next((tmp_path / "c" / "demo").glob("*.mp4"))
    frames = np.stack(list(iter_frames(clip))).astype(np.float32)
    audio = read_audio(clip, 16000)
    loudness = envelope_at_frames(audio, 16000, (np.arange(len(frames)) + 0.5) / 25)
    # The mouth sits in the lower-middle of the frame; open mouths are dark.
    mouth = frames[:, 60:90, 28:68].mean(axis=(1, 2, 3))
    assert np.corrcoef(-mouth, loudness)[0, 1] > 0.6


def test_cli_corpus(tmp_path, messy_folder):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-m", "avlips", "corpus", "--source", f"folder:{messy_folder}",
                             "--out", str(tmp_path / "cli")], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "inputs=18 clips=9 failures=9" in result.stdout
    assert "inputs=18 clips=9 failures=9" in result.stderr  # the log's last line has the counts too
