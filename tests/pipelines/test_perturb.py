"""The perturb stage (grid of shards from clean shards), the random mode and the preview grid."""
from __future__ import annotations

import io as pyio
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from avlips.media.sample import WindowSample
from avlips.perturbations import AVLIPS_TYPES, CATALOGUE, apply, random_choice
from avlips.perturbations.random_mode import key_seed, random_perturbation
from avlips.pipelines.compose import run_compose
from avlips.pipelines.failures import StageFailed
from avlips.pipelines.perturb import PerturbInputError, perturbed_key, run_perturb
from avlips.pipelines.preview import HEADER, MARGIN, make_preview
from avlips.pipelines.shards import iter_tar_samples, tar_bytes
from tests.builders import clip_row, compose_params, talking_clip

LEVELS = [1, 2, 3, 4, 5]
REPO = Path(__file__).resolve().parents[2]


def _read(tar: Path) -> dict[str, dict[str, bytes]]:
    return dict(iter_tar_samples(tar.read_bytes()))


def _stage_bytes(directory: Path) -> dict[str, bytes]:
    """Every output file but temporaries, by path relative to the stage directory."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and ".tmp-" not in p.name}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """Clean shards from run_compose: 2 clips x 4 windows at 64x64 in 3 test shards (+ 1 train shard)."""
    root = tmp_path_factory.mktemp("clean")
    clips = [talking_clip(root / f"c{i}.mp4", seed=i + 1, seconds=1.2) for i in range(3)]
    rows = [clip_row("c0", clips[0], "a"), clip_row("c1", clips[1], "b"),
            clip_row("t0", clips[2], "t", split="train")]
    run_compose(str(root / "shards"), compose_params(root, rows))
    return root / "shards"


def _perturb_params(**settings) -> dict:
    return {"perturb": {"max_failure_fraction": 1.0, **settings}}


@pytest.fixture(scope="module")
def jpg_run(clean, tmp_path_factory) -> Path:
    """The whole grid with the default settings (frames as the clean ones: JPEG), one worker."""
    out = tmp_path_factory.mktemp("perturbed") / "one"
    run_perturb(str(clean), str(out), _perturb_params())
    return out


def test_grid_of_shards_keys_and_metadata(clean, jpg_run):
    clean_tars = sorted(p.name for p in clean.glob("test-*.tar"))
    assert clean_tars == ["test-000000.tar", "test-000001.tar", "test-000002.tar"]
    clean_samples = {k: m for t in clean_tars for k, m in _read(clean / t).items()}
    assert len(clean_samples) == 8
    for name in AVLIPS_TYPES:
        for level in LEVELS:
            cell = jpg_run / name / str(level)
            assert sorted(p.name for p in cell.glob("*.tar")) == clean_tars  # same count, names; no train
            for tar in clean_tars:
                stem = tar[:-4]
                assert (cell / f"{stem}.parquet").exists() and (cell / f"{stem}_stats.json").exists()
                got = _read(cell / tar)
                # Placement: a perturbed sample stays in its clean sample's shard.
                assert sorted(got) == sorted(perturbed_key(k, name, level) for k in _read(clean / tar))
                for key, members in got.items():
                    assert sorted(members) == ["audio.npy", "cls", *(f"f{i}.jpg" for i in range(5)), "json",
                                               "mel.npy"]
                    meta = json.loads(members["json"])
                    clean_key = meta["clean_key"]
                    original = clean_samples[clean_key]
                    assert key == f"{clean_key}_{name}{level}" and meta["key"] == key and "." not in key
                    assert meta["perturbation"] == {"type": name, "level": level,
                                                    "params": CATALOGUE[name].params(level),
                                                    "seed": key_seed(clean_key)}
                    clean_meta = json.loads(original["json"])
                    assert {k: v for k, v in meta.items() if k not in ("key", "clean_key", "perturbation")} == \
                        {k: v for k, v in clean_meta.items() if k not in ("key", "perturbation")}
                    assert members["mel.npy"] == original["mel.npy"] and members["cls"] == original["cls"]
                    # Video perturbations leave the sound alone: the audio goes through byte for byte.
                    assert members["audio.npy"] == original["audio.npy"]
            manifest = pd.read_parquet(cell / "samples.parquet")
            assert len(manifest) == 8 and set(manifest["type"]) == {name} and set(manifest["level"]) == {level}
            assert pd.read_parquet(cell / "failures.parquet").empty
    stats = json.loads((jpg_run / "perturb_stats.json").read_text())
    assert stats["shards_by_split"] == {"test": 3} and stats["cells"] == 30
    assert stats["samples"] == stats["inputs"] == 8 * 30 and stats["failures"] == 0


def test_jpg_frames_are_the_perturbation_up_to_jpeg(clean, jpg_run):
    """Default output re-encodes as JPEG: apply() on the decoded clean frames up to JPEG; the noise's variance kept."""
    clean_samples = {k: WindowSample.decode(k, m) for t in clean.glob("test-*.tar") for k, m in _read(t).items()}
    for name in AVLIPS_TYPES:
        for level in (1, 5):
            for key, members in _read(jpg_run / name / str(level) / "test-000000.tar").items():
                got = WindowSample.decode(key, members)
                source = clean_samples[got.meta["clean_key"]]
                expected = apply(name, source.frames, level, key_seed(source.key))
                error = np.abs(got.frames.astype(float) - expected).mean()
                change = np.abs(expected.astype(float) - source.frames).mean()
                if name == "gaussian_noise":
                    # 4:4:4 JPEG quantised in proportion to the noise: its error is small beside the noise,
                    # and the noise's variance is kept (4:2:0 JPEG would keep about half of it).
                    kept = (got.frames.astype(float) - source.frames).var()
                    applied = (expected.astype(float) - source.frames).var()
                    assert 0.95 <= kept / applied <= 1.05, (key, kept / applied)
                    assert (got.frames.astype(float) - expected).var() < 0.05 * applied, key
                else:
                    assert error < 3.0, (key, error)  # one JPEG q92 pass on 64x64 frames
                if level == 5:
                    assert change > error, (key, change, error)  # the perturbation, not JPEG, dominates


def test_png_frames_equal_the_perturbation_exactly(clean, tmp_path):
    out = tmp_path / "png"
    types = ["gaussian_noise", "compression", "saturation"]
    run_perturb(str(clean), str(out), _perturb_params(types=types, levels=[2, 5], frame_format="png"))
    clean_samples = {k: WindowSample.decode(k, m) for t in clean.glob("test-*.tar") for k, m in _read(t).items()}
    checked = 0
    for name in types:
        for level in (2, 5):
            for tar in (out / name / str(level)).glob("*.tar"):
                for key, members in _read(tar).items():
                    assert "f0.png" in members
                    got = WindowSample.decode(key, members)
                    source = clean_samples[got.meta["clean_key"]]
                    expected = apply(name, source.frames, level, key_seed(source.key))
                    np.testing.assert_array_equal(got.frames, expected, err_msg=key)
                    assert not np.array_equal(got.frames, source.frames)
                    np.testing.assert_array_equal(got.mel_db, source.mel_db)
                    checked += 1
    assert checked == 8 * 6
    assert not (out / "gaussian_blur").exists() and not (out / "saturation" / "1").exists()


def test_same_bytes_for_one_or_two_workers(clean, jpg_run, tmp_path):
    run_perturb(str(clean), str(tmp_path / "two"), _perturb_params(), workers=2)
    one, two = _stage_bytes(jpg_run), _stage_bytes(tmp_path / "two")
    assert len([n for n in one if n.endswith(".tar")]) == 90
    assert one == two


def test_resume_after_losing_shards_gives_the_same_bytes(clean, jpg_run, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(jpg_run, out)
    reference = _stage_bytes(jpg_run)
    cell = out / "gaussian_noise" / "3"
    (cell / "test-000001_stats.json").unlink()  # never finished
    (cell / "test-000001.tar").write_bytes(b"garbage from a killed writer")
    (out / "compression" / "5" / "test-000002.tar").unlink()  # stats without its tar: not finished either
    (cell / "test-000002.tar.tmp-deadbeef").write_bytes(b"partial")
    (out / "perturb_stats.json").unlink()
    skipped = out / "gaussian_noise" / "2" / "test-000001_stats.json"
    before = skipped.stat().st_mtime_ns
    run_perturb(str(clean), str(out), _perturb_params())
    assert _stage_bytes(out) == reference
    assert skipped.stat().st_mtime_ns == before


def test_rerun_redoes_what_other_settings_or_an_older_perturbation_made(clean, jpg_run, tmp_path, monkeypatch):
    out = tmp_path / "rerun"
    shutil.copytree(jpg_run, out)
    stats = lambda t, lv: out / t / str(lv) / "test-000000_stats.json"  # noqa: E731
    before = {t: stats(t, 1).stat().st_mtime_ns for t in ("pixelation", "contrast")}
    # A newer implementation of one type: only that type's shards are redone.
    monkeypatch.setattr(type(CATALOGUE["pixelation"]), "version", 99)
    run_perturb(str(clean), str(out), _perturb_params())
    assert stats("pixelation", 1).stat().st_mtime_ns != before["pixelation"]
    assert stats("contrast", 1).stat().st_mtime_ns == before["contrast"]
    assert json.loads(stats("pixelation", 1).read_text())["made_with"]["version"] == 99
    # Another JPEG quality: everything stored as JPEG is redone.
    run_perturb(str(clean), str(out), _perturb_params(jpeg_quality=80))
    assert json.loads(stats("contrast", 1).read_text())["made_with"]["jpeg_quality"] == 80


def test_killed_run_finishes_with_the_same_bytes(clean, jpg_run, tmp_path):
    out = tmp_path / "killed"
    code = ("import sys; from avlips.pipelines.perturb import run_perturb; "
            "run_perturb(sys.argv[1], sys.argv[2], {'perturb': {'max_failure_fraction': 1.0}})")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", code, str(clean), str(out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.rglob("*_stats.json")):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*_stats.json")}
    assert 0 < len(finished) < 90, len(finished)  # killed part-way through
    run_perturb(str(clean), str(out), _perturb_params())
    assert _stage_bytes(out) == _stage_bytes(jpg_run)
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())  # skipped, not redone


def _bad_clean_dir(clean: Path, root: Path) -> tuple[Path, dict[str, str], int]:
    """Clean shards with bad samples in shard 0 and shard 1 truncated; returns (dir, bad key -> error, read)."""
    bad_dir = root / "bad_clean"
    bad_dir.mkdir()
    for path in clean.glob("test-*"):
        shutil.copy(path, bad_dir / path.name)
    samples = _read(clean / "test-000000.tar")
    template_key, template = sorted(samples.items())[0]
    tiny = WindowSample("tiny", np.zeros((5, 4, 4, 3), np.uint8), np.zeros((128, 4), np.float32), 0,
                        {"perturbation": {"type": "none", "level": 0}}).encode()
    twice = json.loads(template["json"])
    twice["perturbation"] = {"type": "gaussian_blur", "level": 2}
    bad = {
        "garbled": ({**template, "f2.jpg": b"not a jpeg"}, "SampleError"),
        "nomel": ({k: v for k, v in template.items() if k != "mel.npy"}, "SampleError"),
        "tiny": (tiny, "BadFrames"),  # 4x4 frames: below the catalogue's minimum side
        "twice": ({**template, "json": json.dumps(twice).encode()}, "ValueError"),
    }
    samples.update({key: members for key, (members, _) in bad.items()})
    (bad_dir / "test-000000.tar").write_bytes(tar_bytes(samples.items()))
    whole = (clean / "test-000001.tar").read_bytes()
    # Cut in the middle of a frame's data past half the tar: a cut at a header reads as a shorter, valid tar.
    frame = next(m for m in tarfile.open(fileobj=pyio.BytesIO(whole)).getmembers()
                 if m.offset_data >= len(whole) // 2 and m.size > 1024)
    cut = whole[: frame.offset_data + frame.size // 2]
    (bad_dir / "test-000001.tar").write_bytes(cut)
    read = 0
    try:
        for _ in iter_tar_samples(cut):
            read += 1
    except (tarfile.TarError, OSError):
        pass
    return bad_dir, {key: error for key, (_, error) in bad.items()}, read


def test_bad_samples_and_shards_are_failure_records(clean, tmp_path):
    bad_dir, bad, read_before_cut = _bad_clean_dir(clean, tmp_path)
    out = tmp_path / "out"
    types, levels = ["gaussian_blur", "compression"], [1, 5]
    totals = run_perturb(str(bad_dir), str(out), _perturb_params(types=types, levels=levels))
    good = {n: len(_read(clean / f"test-00000{n}.tar")) for n in range(3)}
    lost = good[1] - read_before_cut
    assert read_before_cut >= 1 and lost >= 1
    for name in types:
        for level in levels:
            cell = out / name / str(level)
            failures = pd.read_parquet(cell / "failures.parquet")
            samples = pd.read_parquet(cell / "samples.parquet")
            rows = {row.input.rsplit("#", 1)[-1]: row for row in failures.itertuples() if "#" in row.input}
            assert {k: r.error for k, r in rows.items() if k in bad} == bad
            for key, row in rows.items():
                shard = "test-000000.tar" if key in bad else "test-000001.tar"
                assert row.input == f"{bad_dir / shard}#{key}" and row.stage == "perturb" and key in row.message
            missing = [k for k, r in rows.items() if r.error == "MissingSample"]
            assert len(missing) == lost  # the cut samples, named by the clean manifest
            shard_failures = failures[~failures["input"].str.contains("#")]
            assert list(shard_failures["input"]) == [str(bad_dir / "test-000001.tar")]
            # Counts add up: every clean sample is a sample or a failure of this cell.
            assert len(samples) == good[0] + read_before_cut + good[2]
            assert len(samples) + len(rows) == sum(good.values()) + len(bad)
            assert totals["grid"][name][str(level)] == {
                "samples": len(samples), "failures": len(bad) + lost + 1,
                "failures_by_error": dict(sorted({"BadFrames": 1, "SampleError": 2, "ValueError": 1,
                                                  "MissingSample": lost,
                                                  shard_failures["error"].iloc[0]: 1}.items()))}
    assert totals["inputs"] == totals["samples"] + totals["failures"]
    with pytest.raises(StageFailed):
        run_perturb(str(bad_dir), str(tmp_path / "strict"),
                    {"perturb": {"types": types, "levels": levels, "max_failure_fraction": 0.2}})


def test_stage_refuses_what_it_cannot_run(clean, tmp_path):
    with pytest.raises(PerturbInputError, match="no clean shards"):
        run_perturb(str(tmp_path), str(tmp_path / "o"), _perturb_params())
    with pytest.raises(PerturbInputError, match="unknown"):
        run_perturb(str(clean), str(tmp_path / "o"), _perturb_params(types=["sepia"]))
    with pytest.raises(PerturbInputError, match="levels"):
        run_perturb(str(clean), str(tmp_path / "o"), _perturb_params(levels=[0, 6]))
    with pytest.raises(PerturbInputError, match="noise_types: unknown"):
        run_perturb(str(clean), str(tmp_path / "o"), _perturb_params(noise_types=["gausian_noise"]))
    with pytest.raises(PerturbInputError, match="noise_step"):
        run_perturb(str(clean), str(tmp_path / "o"), _perturb_params(noise_step=0))
    gap = tmp_path / "gap"
    gap.mkdir()
    shutil.copy(clean / "test-000000.tar", gap / "test-000000.tar")
    shutil.copy(clean / "test-000002.tar", gap / "test-000002.tar")
    with pytest.raises(PerturbInputError, match="test-000001"):
        run_perturb(str(gap), str(tmp_path / "o"), _perturb_params())


def test_a_sample_perturbed_in_memory_is_what_the_shards_store(clean, jpg_run):
    """The contract for perturbing on the fly (perturb.materialize false): perturb_sample's members are the shard's."""
    from avlips.pipelines.perturb import PerturbConfig, perturb_sample

    config = PerturbConfig.from_params(_perturb_params())
    clean_tar = clean / "test-000000.tar"
    for key, members in _read(clean_tar).items():
        sample = WindowSample.decode(key, members)
        for name in ("gaussian_noise", "compression"):
            records = perturb_sample(key, members, name, (2, 5), config, str(clean_tar), decoded=sample)
            for level, record in records.items():
                stored = _read(jpg_run / name / str(level) / "test-000000.tar")[perturbed_key(key, name, level)]
                assert record["kind"] == "sample" and record["members"] == stored, (key, name, level)


def test_materialize_false_writes_no_shards(clean, tmp_path):
    out = tmp_path / "o"
    totals = run_perturb(str(clean), str(out), _perturb_params(materialize=False, types=["contrast"]))
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["perturb_stats.json"]
    stats = json.loads((out / "perturb_stats.json").read_text())
    assert stats == totals and stats["materialize"] is False and stats["types"] == ["contrast"]
    assert stats["levels"] == LEVELS and stats["seed"] == 0 and stats["samples"] == 0


def test_train_split_on_request(clean, tmp_path):
    totals = run_perturb(str(clean), str(tmp_path / "o"),
                         _perturb_params(splits=["train"], types=["contrast"], levels=[3]))
    assert totals["shards_by_split"] == {"train": 2}
    assert sorted(p.name for p in (tmp_path / "o" / "contrast" / "3").glob("*.tar")) == \
        ["train-000000.tar", "train-000001.tar"]


def test_random_mode_is_a_function_of_key_and_salt():
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    same, none = random_perturbation(frames, "k", 0.0)
    assert none is None and same is frames
    out, choice = random_perturbation(frames, "k", 1.0)
    again, choice_again = random_perturbation(frames, "k", 1.0)
    assert choice == choice_again and np.array_equal(out, again)
    assert (choice["type"], choice["level"]) == random_choice(key_seed("k"))
    np.testing.assert_array_equal(out, apply(choice["type"], frames, choice["level"], key_seed("k")))
    choices = [random_perturbation(frames[:1], f"key{i}", 1.0)[1] for i in range(120)]
    assert {c["type"] for c in choices} == set(AVLIPS_TYPES) and {c["level"] for c in choices} == set(LEVELS)
    applied = sum(random_perturbation(frames[:1], f"key{i}", 0.3)[1] is not None for i in range(400))
    assert 80 < applied < 160  # about 30%
    by_salt = {json.dumps(random_perturbation(frames[:1], "k", 1.0, salt=s)[1]) for s in range(20)}
    assert len(by_salt) > 5  # the epoch as salt draws afresh
    assert key_seed("k") != key_seed("k", 1) and 0 <= key_seed("k") < 2 ** 63
    with pytest.raises(ValueError):
        random_perturbation(frames, "k", 1.5)


def _decode_png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_preview_from_shards_and_from_a_video(clean, tmp_path):
    out = tmp_path / "grid.png"
    key = sorted(_read(clean / "test-000001.tar"))[0]
    shape = make_preview(str(clean / "test-{000000..000002}.tar"), str(out), cell=64, key=key)
    assert shape == (HEADER + 64 * 6, MARGIN + 64 * 6, 3) and _decode_png(out).shape == shape
    grid = _decode_png(out)
    frames = WindowSample.decode(key, _read(clean / "test-000001.tar")[key]).frames
    noise_row = 2 * 64 + HEADER
    clean_cell = grid[noise_row:noise_row + 64, MARGIN:MARGIN + 64]
    np.testing.assert_array_equal(clean_cell, frames[2])  # the middle frame at its own size
    noisy = grid[noise_row + 4:noise_row + 40, MARGIN + 5 * 64:MARGIN + 6 * 64]  # above the in-cell label
    expected = apply("gaussian_noise", frames, 5, key_seed(key))[2][4:40]
    np.testing.assert_array_equal(noisy, expected)
    video = talking_clip(tmp_path / "v.mp4", seed=9, seconds=0.6)
    shape = make_preview(str(video), str(tmp_path / "v.png"), types=["contrast", "compression"], levels=[1, 3],
                         frame_size=96, cell=48)
    assert shape == (HEADER + 48 * 2, MARGIN + 48 * 3, 3) and _decode_png(tmp_path / "v.png").shape == shape


def test_preview_of_a_bad_source_is_an_input_error_naming_it(tmp_path):
    """The command reports PerturbInputError in one line; a traceback is no message for a bad file."""
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "notes.tar").write_text("not a tar")
    bad = {str(tmp_path / "notes.mp4"): "not a media file", str(tmp_path / "none.mp4"): "no such file",
           str(tmp_path / "notes.tar"): "", str(tmp_path / "none-{000000..000001}.tar"): "No such file"}
    for source, problem in bad.items():
        with pytest.raises(PerturbInputError, match="cannot preview") as caught:
            make_preview(source, str(tmp_path / "grid.png"))
        assert source in str(caught.value) and problem in str(caught.value)
    assert not (tmp_path / "grid.png").exists()


@pytest.fixture(scope="module")
def sound_run(clean, tmp_path_factory) -> Path:
    """Audio and call types at levels 1 and 5 (frames as the clean ones: JPEG)."""
    out = tmp_path_factory.mktemp("perturbed") / "sound"
    run_perturb(str(clean), str(out), _perturb_params(types=["opus", "packet_loss", "call"], levels=[1, 5]))
    return out


@pytest.mark.slow
def test_audio_and_call_types_make_perturbed_shards(clean, sound_run):
    from avlips.perturbations import lookup
    from avlips.perturbations.window import perturb_window

    clean_samples = {k: m for t in sorted(clean.glob("test-*.tar")) for k, m in _read(t).items()}
    for name in ("opus", "packet_loss", "call"):
        for level in (1, 5):
            got = {k: m for t in sorted((sound_run / name / str(level)).glob("test-*.tar")) for k, m in _read(t).items()}
            assert len(got) == len(clean_samples) == 8
            for key, members in got.items():
                clean_key = key[: -len(f"_{name}{level}")]
                source = clean_samples[clean_key]
                meta = json.loads(members["json"])
                assert meta["perturbation"] == {"type": name, "level": level, "params": lookup(name).params(level),
                                                "seed": key_seed(clean_key)}
                assert meta["audio"] == json.loads(source["json"])["audio"]
                sample = WindowSample.decode(key, members)
                expected = perturb_window(WindowSample.decode(clean_key, source), name, level, key_seed(clean_key))
                # The stored audio context is the perturbed one, and the mel is recomputed from it.
                assert np.array_equal(sample.audio, expected.audio) and sample.audio.dtype == np.int16
                np.testing.assert_array_equal(sample.mel_db, expected.mel_db)
                frame_names = sorted(n for n in members if n.startswith("f"))
                if name == "call":
                    assert not all(members[n] == source[n] for n in frame_names)
                else:  # the picture is untouched: the clean frames' own bytes
                    assert all(members[n] == source[n] for n in frame_names)


@pytest.mark.slow
def test_audio_damage_shows_in_the_stored_mel(clean, sound_run):
    clean_samples = {k: WindowSample.decode(k, m) for t in sorted(clean.glob("test-*.tar"))
                     for k, m in _read(t).items()}

    def mel_change(name, level):
        changes = []
        for tar in sorted((sound_run / name / str(level)).glob("test-*.tar")):
            for key, members in _read(tar).items():
                mel = WindowSample.decode(key, members).mel_db
                changes.append(np.abs(mel - clean_samples[key[: -len(f"_{name}{level}")]].mel_db).mean())
        return float(np.mean(changes))

    for name in ("opus", "call"):
        assert mel_change(name, 5) > mel_change(name, 1) > 0


@pytest.mark.slow
def test_a_sample_without_audio_is_a_failure_naming_it(clean, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for tar in clean.glob("test-*.tar"):
        samples = _read(tar)
        if tar.name == "test-000000.tar":
            first = sorted(samples)[0]
            samples[first] = {n: b for n, b in samples[first].items() if n != "audio.npy"}
            no_audio = first
        (old / tar.name).write_bytes(tar_bytes(sorted(samples.items())))
    out = tmp_path / "out"
    totals = run_perturb(str(old), str(out), _perturb_params(types=["background_noise", "contrast"], levels=[2]))
    failures = pd.read_parquet(out / "background_noise" / "2" / "failures.parquet")
    assert list(failures["error"]) == ["MissingAudio"]
    message = failures["message"].iloc[0]
    assert failures["input"].iloc[0] == f"{old / 'test-000000.tar'}#{no_audio}"
    assert no_audio in message and "audio.npy" in message
    assert totals["grid"]["background_noise"]["2"] == {"samples": 7, "failures": 1,
                                                       "failures_by_error": {"MissingAudio": 1}}
    assert totals["grid"]["contrast"]["2"]["samples"] == 8  # a video type needs no audio


def test_types_from_every_family_by_name(clean, tmp_path):
    from avlips.pipelines.perturb import PerturbConfig

    config = PerturbConfig.from_params(_perturb_params(types=["contrast", "amr_nb", "call"]))
    assert config.types == ("contrast", "amr_nb", "call")
    with pytest.raises(PerturbInputError, match=r"unknown \['gsm'\]; known: .*'opus'.*'call'"):
        PerturbConfig.from_params(_perturb_params(types=["opus", "gsm"]))


def test_preview_draws_audio_types_as_spectrograms_and_the_call_as_frames_and_sound(clean, tmp_path):
    from avlips.pipelines.preview import spectrogram_image

    out = tmp_path / "sound.png"
    key = sorted(_read(clean / "test-000001.tar"))[0]
    sample = WindowSample.decode(key, _read(clean / "test-000001.tar")[key])
    cell = 64
    shape = make_preview(str(clean / "test-{000000..000002}.tar"), str(out), types=["mp3", "call"], levels=[1, 5],
                         cell=cell, key=key)
    assert shape == (HEADER + cell * 2, MARGIN + cell * 3, 3)
    grid = _decode_png(out)
    info = sample.meta["audio"]
    span = (info["window_start"], info["window_start"] + info["window_samples"])
    from avlips.pipelines.preview import spectrogram_db

    top_db = float(spectrogram_db(sample.audio).max())
    # The clean audio's spectrogram, and mp3 at 8 kbit/s's, with the window's span marked.
    np.testing.assert_array_equal(grid[HEADER:HEADER + cell, MARGIN:MARGIN + cell],
                                  spectrogram_image(sample.audio, top_db, (cell, cell), span))
    mp3 = apply_audio_for_test("mp3", sample, 5, key_seed(key))
    np.testing.assert_array_equal(grid[HEADER:HEADER + 40, MARGIN + 2 * cell:MARGIN + 3 * cell],
                                  spectrogram_image(mp3, top_db, (cell, cell), span)[:40])
    # The call's cell: its middle frame above its spectrogram.
    call_cell = grid[HEADER + cell:HEADER + 2 * cell, MARGIN:MARGIN + cell]
    strip = cell // 3
    np.testing.assert_array_equal(call_cell[cell - strip:], spectrogram_image(sample.audio, top_db, (strip, cell),
                                                                              span))
    assert call_cell[:cell - strip].std() > 0


def apply_audio_for_test(name, sample, level, seed):
    from avlips.perturbations import apply_audio

    return apply_audio(name, sample.audio, sample.meta["audio"]["sample_rate"], level, seed, sample=sample.key)
