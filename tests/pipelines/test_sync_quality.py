"""The sync_quality stage: every real clip and every fake scored by the expert, a broken video a row with its reason."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from avlips.cli import main
from avlips.model.sync.network import SyncNet, SyncNetConfig
from avlips.model.sync.weights import save_expert
from avlips.params import ParamsError, package_defaults
from avlips.pipelines.dropped_videos import DroppedVideosError, read_dropped
from avlips.pipelines.sync_quality import (SyncQualityConfig, SyncQualityInputError, min_sync_confidence,
                                           run_sync_quality, videos_to_score)
from avlips.pipelines.sync_quality_table import SCHEMA, read_metadata
from avlips.pipelines.synthesize import SynthesizeConfig


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _expert(path: Path) -> Path:
    """A tiny expert of random weights, saved in the project's checkpoint format."""
    torch.manual_seed(0)
    save_expert(path, SyncNet(SyncNetConfig((2, 2, 4, 4, 8), face_size=48)).eval(), 0, {})
    return path


def _clip(clip_id: str, path, identity: str, split: str = "test", label: int = 0, centred: bool = True) -> dict:
    return {"clip_id": clip_id, "path": str(path), "label": label, "split": split, "identity": identity,
            "generator": "", "centred": centred, "audio_path": ""}


def _fake(fake_id: str, path, target: str, driving_audio, generator: str = "audio_swap") -> dict:
    return {"fake_id": fake_id, "path": str(path), "target_clip": target, "driving_clip": "",
            "driving_audio": str(driving_audio), "generator": generator}


def _params(root: Path, clips: list[dict], fakes: list[dict], expert: Path | str, audio: str = "",
            threshold=None) -> dict:
    pd.DataFrame(clips).to_parquet(root / "clips.parquet")
    pd.DataFrame(fakes).to_parquet(root / "fakes.parquet")
    params = package_defaults()
    params["sync_quality"].update(clips=str(root / "clips.parquet"), fakes=str(root / "fakes.parquet"), audio=audio,
                                  out=str(root / "sync_quality.parquet"), dropped=str(root / "sync_dropped.json"),
                                  checkpoint_every=1)
    params["sync"].update(model=str(expert), expert_weights="")
    params["synthesize"]["min_sync_confidence"] = threshold
    return params


@pytest.mark.slow  # encodes two videos and warms up librosa (about 6 s on a shared core)
def test_real_and_fake_scored_a_broken_video_is_a_row_and_a_rerun_reuses(tmp_path):
    from tests.builders import talking_clip

    real = talking_clip(tmp_path / "real.mp4", seed=3, seconds=1.2, size=48)
    other = talking_clip(tmp_path / "other.mp4", seed=4, seconds=1.2, size=48)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 50)
    clips = [_clip("real-0", real, "ann"), _clip("real-1", other, "ben")]
    # The fake shows ben's face with ann's speech (an audio swap); another fake's file is broken; a third's
    # target is not in the corpus (compose leaves it out).
    fakes = [_fake("fake-0", other, "real-1", real), _fake("fake-1", broken, "real-0", other),
             _fake("fake-2", other, "gone", real, generator="mouth_rewrite")]
    params = _params(tmp_path, clips, fakes, _expert(tmp_path / "expert.pt"))

    stats = run_sync_quality(params)
    rows = {r["video_id"]: r for r in pd.read_parquet(tmp_path / "sync_quality.parquet").to_dict("records")}
    assert (stats["videos"], stats["scored"], stats["failures"], stats["left_out"]) == (5, 3, 2, 1)
    for name in ("real-0", "real-1", "fake-0"):
        row = rows[name]
        assert row["error"] == "" and row["kept"] and row["windows"] == 30 - 4 and row["offsets_available"] == 31
        assert row["lse_c"] >= 0 and row["lse_d"] >= 0 and -15 <= row["best_offset"] <= 15
    assert (rows["real-0"]["kind"], rows["fake-0"]["kind"], rows["fake-0"]["generator"]) == ("real", "fake", "audio_swap")
    assert rows["fake-0"]["audio"] == str(real) and rows["fake-0"]["split"] == "test"
    assert rows["fake-1"]["error"] and str(broken) in rows["fake-1"]["reason"] and pd.isna(rows["fake-1"]["lse_c"])
    assert rows["fake-2"]["error"] == "LeftOutByCompose" and "gone" in rows["fake-2"]["reason"]
    assert read_metadata(str(tmp_path / "sync_quality.parquet"))["offsets"] == 15
    off = (tmp_path / "sync_dropped.json").read_bytes()
    assert json.loads(off) == {"min_sync_confidence": None, "dropped": []}  # the same bytes while the threshold is off

    # A threshold just above fake-0's LSE-C: it is not kept, nor is the broken fake; nothing is scored again.
    params["synthesize"]["min_sync_confidence"] = float(rows["fake-0"]["lse_c"]) + 1e-6
    again = run_sync_quality(params)
    assert (again["reused"], again["scored_now"], again["dropped"]) == (3, 2, 1)
    later = {r["video_id"]: r for r in pd.read_parquet(tmp_path / "sync_quality.parquet").to_dict("records")}
    assert not later["fake-0"]["kept"] and "below synthesize.min_sync_confidence" in later["fake-0"]["reason"]
    assert later["fake-0"]["lse_c"] == rows["fake-0"]["lse_c"]
    assert later["real-0"]["kept"] and later["real-1"]["kept"] and not later["fake-1"]["kept"]
    # The drop list train and evaluate read: every fake not kept, with the reason.
    dropped = json.loads((tmp_path / "sync_dropped.json").read_text())["dropped"]
    assert [d["video_id"] for d in dropped] == ["fake-0", "fake-1", "fake-2"]
    assert "below synthesize.min_sync_confidence" in dropped[0]["reason"]
    assert read_dropped(str(tmp_path / "sync_dropped.json"), "train.exclude_videos") == ("fake-0", "fake-1", "fake-2")
    params["synthesize"]["min_sync_confidence"] = None
    run_sync_quality(params)
    assert (tmp_path / "sync_dropped.json").read_bytes() == off


def test_no_expert_is_one_line_naming_the_file(tmp_path, capsys):
    params = _params(tmp_path, [_clip("real-0", tmp_path / "x.mp4", "ann")], [], tmp_path / "missing.pt")
    with pytest.raises(SyncQualityInputError, match=r"missing.pt: lip-sync expert not found"):
        run_sync_quality(params)
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 cut short")
    argv = ["sync-quality", "--clips", params["sync_quality"]["clips"], "--fakes", "",
            "--out", str(tmp_path / "q.parquet"), "--dropped", str(tmp_path / "d.json"),
            "--expert", str(tmp_path / "cut.pt")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cut.pt" in err and "Traceback" not in err
    assert not (tmp_path / "q.parquet").exists() and not (tmp_path / "d.json").exists()


def test_videos_get_the_audio_and_face_handling_compose_gives_them(tmp_path):
    clips = [_clip("a-0", "a.mp4", "ann", centred=False), _clip("b-0", "b.mp4", "ben", split="val"),
             _clip("c-0", "c.mp4", "cat")]
    pd.DataFrame(clips).to_parquet(tmp_path / "clips.parquet")
    pd.DataFrame([_fake("f-0", "f.mp4", "a-0", "audio/b-0.wav")]).to_parquet(tmp_path / "fakes.parquet")
    # c-0's denoising failed: denoise's manifest lacks it.
    pd.DataFrame({"clip_id": ["a-0", "b-0"], "path": ["audio/a-0.wav", "audio/b-0.wav"]}).to_parquet(
        tmp_path / "audio.parquet")
    config = SyncQualityConfig(clips=str(tmp_path / "clips.parquet"), audio=str(tmp_path / "audio.parquet"),
                               fakes=str(tmp_path / "fakes.parquet"))
    videos = {v["video_id"]: v for v in videos_to_score(config)}
    assert videos["a-0"]["audio"] == "audio/a-0.wav" and not videos["a-0"]["centred"]
    assert videos["b-0"]["centred"] and videos["b-0"]["split"] == "val"
    assert "failed denoising" in videos["c-0"]["skip"]
    # The fake: its driving speech, its target's split, identity and face handling (not centred).
    fake = videos["f-0"]
    assert (fake["kind"], fake["audio"], fake["split"], fake["identity"], fake["centred"]) == \
        ("fake", "audio/b-0.wav", "test", "ann", False)
    pd.DataFrame(clips).drop(columns=["identity"]).to_parquet(tmp_path / "clips.parquet")
    with pytest.raises(SyncQualityInputError, match=r"clips.parquet: lacks the column\(s\) identity"):
        videos_to_score(config)


def test_params_blocks():
    params = package_defaults()
    config = SyncQualityConfig.from_params(params)
    assert config.out == "data/sync_quality.parquet" and config.offsets == params["sync"]["offsets"]
    assert min_sync_confidence(params) is None  # off by default
    assert SynthesizeConfig.from_params(params).min_sync_confidence is None
    params["synthesize"]["min_sync_confidence"] = 0.3
    assert min_sync_confidence(params) == 0.3 and SynthesizeConfig.from_params(params).min_sync_confidence == 0.3
    params["synthesize"]["min_sync_confidence"] = "high"
    with pytest.raises(ParamsError, match="synthesize.min_sync_confidence"):
        min_sync_confidence(params)
    with pytest.raises(ParamsError, match=r"sync_quality: unknown key 'offset' \(did you mean 'offsets'"):
        SyncQualityConfig.from_params({"sync_quality": {"offset": 3}})
    assert {"video_id", "kind", "generator", "split", "lse_c", "lse_d", "best_offset", "windows",
            "offsets_available", "error", "reason", "kept"} <= set(SCHEMA.names)


def test_a_drop_list_that_is_not_one_is_an_error_naming_the_file(tmp_path):
    assert read_dropped("", "evaluate.exclude_videos") == ()
    assert read_dropped(str(tmp_path / "none.json"), "evaluate.exclude_videos") == ()  # not made yet: nothing dropped
    bad = tmp_path / "sync_dropped.json"
    bad.write_text('{"dropped": [{"id": "x"}]}')
    with pytest.raises(DroppedVideosError, match=r"sync_dropped.json \(train.exclude_videos\)"):
        read_dropped(str(bad), "train.exclude_videos")
