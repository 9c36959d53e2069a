"""The evaluate stage and single-video detection, on tiny shards and a tiny untrained model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video
from avlips.media.frames import iter_frames
from avlips.media.errors import MediaError, NoFace, NotAVideo, TooShort
from avlips.media.windows import WindowConfig
from avlips.model.checkpoints import save_checkpoint
from avlips.model.lipfd import LipFDConfig, build_lipfd
from tests.builders import clip_row, compose_params, register_detectors, talking_clip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Clean test shards of 2 real + 2 fake clips (and 4 real validation clips), blur-perturbed test shards,
    and a tiny saved model."""
    from avlips.pipelines.compose import run_compose
    from avlips.pipelines.perturb import run_perturb

    root = tmp_path_factory.mktemp("evaluate")
    clips = [talking_clip(root / f"c{i}.mp4", seed=i + 1, seconds=1.6, size=64) for i in range(8)]
    rows = [{**clip_row(f"c{i}", p, f"id{i}", label=int(i in (2, 3)), split="test" if i < 4 else "val"),
             "generator": "audio_swap" if i in (2, 3) else ""} for i, p in enumerate(clips)]
    params = compose_params(root, rows, n_windows=3, frame_size=64, samples_per_shard=6)
    run_compose(str(root / "clean"), params)
    run_perturb(str(root / "clean"), str(root / "perturbed"),
                {"perturb": {"types": ["gaussian_blur"], "levels": [1, 3]}})
    torch.manual_seed(0)
    config = LipFDConfig(encoder="vit-tiny", backbone="resnet18")
    model = build_lipfd(config)
    save_checkpoint(root / "model.pt", model, step=0, config=config,
                    extra={"train": {"input_mode": "reference_compatible", "crop_size": 32}})
    return root, clips


def test_evaluate_writes_the_report(built):
    from avlips.model.evaluate import run_evaluate

    root, _ = built
    report = run_evaluate(str(root / "model.pt"), str(root / "clean"), str(root / "perturbed"),
                          str(root / "reports"), {"evaluate": {"bootstrap_rounds": 20, "device": "cpu"}})
    samples = pd.read_parquet(root / "clean" / "samples.parquet")
    test_windows = int((samples.split == "test").sum())
    assert report["windows"] == 3 * test_windows  # clean + two blur levels
    assert report["clean"]["window"]["n"] == test_windows and report["clean"]["video"]["n"] == 4
    assert set(report["perturbations"]["gaussian_blur"]) == {"1", "3"}
    assert list(report["per_generator"]) == ["audio_swap"]
    assert report["model"]["crop_size"] == 32
    stored = json.loads((root / "reports" / "robustness.json").read_text())
    assert stored["windows"] == report["windows"]
    text = (root / "reports" / "robustness.md").read_text()
    assert "| gaussian_blur |" in text and "## Per generator" in text
    assert (root / "reports" / "plots" / "auc_by_level.png").exists()


def test_evaluate_leaves_out_the_videos_of_the_drop_list(tmp_path, built):
    from avlips.model.evaluate import run_evaluate

    root, _ = built
    dropped = tmp_path / "sync_dropped.json"
    dropped.write_text(json.dumps({"min_sync_confidence": 0.5, "dropped": [
        {"video_id": "c2", "generator": "audio_swap", "reason": "LSE-C 0.1 is below 0.5"}]}))
    report = run_evaluate(str(root / "model.pt"), str(root / "clean"), str(root / "perturbed"), str(tmp_path / "r"),
                          {"evaluate": {"bootstrap_rounds": 20, "device": "cpu", "exclude_videos": str(dropped)}})
    samples = pd.read_parquet(root / "clean" / "samples.parquet")
    test = samples[samples.split == "test"]
    kept, left_out = int((test["clip"] != "c2").sum()), int((test["clip"] == "c2").sum())
    assert left_out > 0 and report["windows"] == 3 * kept  # clean + two blur levels
    assert report["read"]["excluded"] == {"list": str(dropped), "videos": 1, "windows": 3 * left_out}
    assert report["clean"]["video"]["n"] == 3 and list(report["per_generator"]) == ["audio_swap"]


def test_evaluate_without_shards_is_a_clear_error(tmp_path, built):
    from avlips.model.evaluate import EvaluateInputError, run_evaluate

    root, _ = built
    with pytest.raises(EvaluateInputError, match="no test-NNNNNN.tar"):
        run_evaluate(str(root / "model.pt"), str(tmp_path), "", str(tmp_path / "r"), {})
    with pytest.raises(EvaluateInputError, match="no such model"):
        run_evaluate(str(tmp_path / "absent.pt"), str(root / "clean"), "", str(tmp_path / "r"), {})


def test_detect_scores_each_window(built):
    from avlips.model.detect import detect, format_detection

    root, clips = built
    result = detect(str(clips[0]), checkpoint=str(root / "model.pt"), window=WindowConfig(n_windows=4, frame_size=64),
                    centred=True)
    assert len(result.windows) == 4 and not result.skipped
    scores = [w["score"] for w in result.windows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.probability == pytest.approx(float(np.mean(scores)))
    assert result.verdict in ("fake", "real")
    assert "clip probability of fake" in format_detection(result)


def test_detect_denoises_the_track_as_the_dataset_did(built, tmp_path):
    from avlips.media.denoise import DenoiseSettings, denoise
    from avlips.model.detect import denoised_audio, detect

    root, clips = built
    settings = DenoiseSettings()
    cleaned = denoised_audio(str(clips[0]), settings, str(tmp_path))
    expected = denoise(read_audio(clips[0], settings.sample_rate), settings.sample_rate, settings)
    np.testing.assert_allclose(read_audio(cleaned, settings.sample_rate), expected, atol=2 / 32767)
    window = WindowConfig(n_windows=3, frame_size=64)
    result = detect(str(clips[0]), checkpoint=str(root / "model.pt"), window=window, centred=True, denoise=settings)
    assert result.audio_denoised and result.audio == str(clips[0]) and len(result.windows) == 3
    assert result.to_dict()["audio_denoised"] is True
    # A track of zeros holds nothing to clean: the same one-line error as without denoising, naming the file.
    frames = np.stack(list(iter_frames(clips[0])))
    write_video(tmp_path / "zeros.mp4", frames, 25, np.zeros(len(frames) * 640, np.float32), 16000)
    with pytest.raises(MediaError, match=r"zeros.mp4: silent audio"):
        detect(str(tmp_path / "zeros.mp4"), checkpoint=str(root / "model.pt"), window=window, centred=True,
               denoise=settings)


def test_detect_bad_inputs(built, tmp_path):
    from avlips.model.detect import detect

    root, clips = built
    model = str(root / "model.pt")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(NotAVideo):
        detect(str(tmp_path / "notes.mp4"), checkpoint=model, centred=True)
    frames = np.stack(list(iter_frames(clips[0])))
    write_video(tmp_path / "short.mp4", frames[:3], 25, read_audio(clips[0])[:2000], 16000)
    with pytest.raises(TooShort):
        detect(str(tmp_path / "short.mp4"), checkpoint=model, centred=True)
    write_video(tmp_path / "silent_track.mp4", frames, 25)
    with pytest.raises(Exception, match="no audio"):
        detect(str(tmp_path / "silent_track.mp4"), checkpoint=model, centred=True)
    grey = np.full((20, 96, 96, 3), 128, np.uint8)
    write_video(tmp_path / "noface.mp4", grey, 25, read_audio(clips[0])[:12800], 16000)
    with pytest.raises(NoFace):
        detect(str(tmp_path / "noface.mp4"), checkpoint=model)


def test_detect_cli_exit_codes(built, tmp_path):
    root, clips = built
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "avlips", "--params", str(tmp_path / "none.yaml")]
    (tmp_path / "none.yaml").write_text("compose: {n_windows: 3, frame_size: 64}\n")
    ok = subprocess.run(base + ["detect", str(clips[2]), "--checkpoint", str(root / "model.pt"), "--centred", "--json",
                                "--detector", "lipfd"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["verdict"] in ("fake", "real") and result["detector"] == "lipfd"
    # A checkpoint that does not say what it was trained on: said on stderr and in the JSON.
    assert "does not record what it was trained on" in result["warnings"][0]
    assert "WARNING: " in ok.stderr and "does not record" in ok.stderr
    (tmp_path / "bad.mp4").write_text("nope")
    bad = subprocess.run(base + ["detect", str(tmp_path / "bad.mp4"), "--checkpoint", str(root / "model.pt")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "bad.mp4" in bad.stderr and "Traceback" not in bad.stderr


def test_detect_says_plainly_that_a_model_trained_on_the_demo_means_nothing_on_real_footage(built, tmp_path):
    from avlips.model.detect import detect, format_detection

    root, clips = built
    torch.manual_seed(0)
    config = LipFDConfig(encoder="vit-tiny", backbone="resnet18")
    provenance = {"corpus": {"sources": ["demo"], "synthetic": True}, "synthetic": True,
                  "generators": ["mouth_rewrite"], "train_shards": [], "val_shards": []}
    save_checkpoint(tmp_path / "demo.pt", build_lipfd(config), step=0, config=config,
                    extra={"train": {"input_mode": "reference_compatible", "crop_size": 32}, "provenance": provenance})
    result = detect(str(clips[0]), checkpoint=str(tmp_path / "demo.pt"), window=WindowConfig(n_windows=2, frame_size=64),
                    centred=True)
    assert result.provenance == provenance
    assert len(result.warnings) == 1 and "synthetic demo corpus" in result.warnings[0]
    assert "mean nothing" in result.to_dict()["warnings"][0]
    assert "clip probability of fake" in format_detection(result)


@pytest.mark.slow
def test_detect_with_a_checkpoint_in_the_released_format(built, tmp_path):
    """The released LipFD file format (CLIP ViT-L/14 + ResNet-50, text tower included) scores a video."""
    from avlips.model.detect import detect

    listing = REPO.parent / "shared" / "reference" / "lipfd_state_dict.tsv"
    if not listing.exists():
        pytest.skip(f"{listing} not found")
    _, clips = built
    torch.manual_seed(0)
    model = build_lipfd(LipFDConfig(encoder="clip-vit-l14", backbone="resnet50"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for line in listing.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            if key not in state:  # the CLIP text tower, which detection does not use
                dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
                state[key] = torch.zeros(dims)
    del model
    torch.save({"model": state, "optimizer": {}, "total_steps": 1}, tmp_path / "released.pth")
    del state
    result = detect(str(clips[0]), checkpoint=str(tmp_path / "released.pth"),
                    window=WindowConfig(n_windows=2, frame_size=64), centred=True, batch_size=2)
    assert "reference" in result.model and len(result.windows) == 2
    assert all(0.0 <= w["score"] <= 1.0 for w in result.windows)


def test_an_unreadable_checkpoint_is_a_clear_error_of_the_command(tmp_path):
    """A broken model file: an input error naming it (the CLI prints it and exits 1), not a traceback."""
    from avlips.model.checkpoints import CheckpointError
    from avlips.model.evaluate import EvaluateInputError, load_detector

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    for name in ("notes.pt", "empty.pt", "list.pt", "other.pt"):
        with pytest.raises(EvaluateInputError, match=str(tmp_path / name)) as caught:
            load_detector(str(tmp_path / name), device="cpu")
        assert isinstance(caught.value, CheckpointError)  # still what callers of the model API catch
    with pytest.raises(EvaluateInputError, match="is a directory"):
        load_detector(str(tmp_path), device="cpu")
    (tmp_path / "none.yaml").write_text("{}\n")
    cli = subprocess.run([sys.executable, "-m", "avlips", "--params", str(tmp_path / "none.yaml"), "detect",
                          str(tmp_path / "notes.pt"), "--checkpoint", str(tmp_path / "notes.pt")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert cli.returncode == 1 and "notes.pt: not a readable PyTorch checkpoint" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_a_file_that_is_no_lipfd_checkpoint_is_an_error_naming_it(tmp_path):
    from avlips.model.checkpoints import CheckpointError
    from avlips.model.evaluate import load_detector

    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=f"{path}: reference checkpoint does not fit"):
        load_detector(str(path), device="cpu")


# -- detectors side by side (a test-only detector stands in for sync until the real one is installed)


def _loudness_detector():
    """A detector that reads the audio field: louder window audio -> more fake; abstains on each clip's first window."""
    from avlips.model.detectors import AUDIO, FRAMES, Detector, Readiness, WindowScore

    class Loudness(Detector):
        name, version, reads = "loudness", "1", (FRAMES, AUDIO)

        def __init__(self, gain: float = 1.0):
            self.gain = gain

        def readiness(self):
            return Readiness(True, "no weights")

        def score(self, samples):
            for sample in samples:
                if sample.meta["window"] == 0:
                    yield WindowScore(sample.key, None, "no speech (window 0)")
                    continue
                rms = float(np.sqrt(np.mean(sample.audio.astype(np.float64) ** 2))) / 32768
                yield WindowScore(sample.key, float(1 / (1 + np.exp(-self.gain * (20 * rms - 1)))), "",
                                  {"offsets_available": 31 - sample.meta["audio"]["cut_before"] // 640})

    return Loudness


@pytest.mark.slow
def test_lipfd_as_a_plugin_scores_as_the_loader_path_did(built):
    """Decoded samples fed to the LipFD detector give exactly the scores of scoring the shards through the loader."""
    from avlips.model.detectors import load_detector_plugin
    from avlips.model.evaluate import load_detector, score_shards
    from avlips.model.shard_samples import iter_shard_samples

    root, _ = built
    shards = sorted(str(p) for p in (root / "clean").glob("test-*.tar"))
    old = {key: score for key, _, _, score in score_shards(load_detector(str(root / "model.pt"), "cpu"), shards, 4)}
    detector = load_detector_plugin("lipfd", {"model": str(root / "model.pt"), "device": "cpu", "batch_size": 4})
    assert detector.readiness().ready and detector.name == "lipfd"
    new = {s.key: s.probability for s in detector.score(item.sample for item in iter_shard_samples(shards))}
    assert new == old and len(new) == 12


@pytest.mark.slow
def test_detectors_side_by_side_with_abstentions_and_a_fused_verdict(built, monkeypatch, tmp_path):
    from avlips.model.evaluate import run_evaluate

    root, _ = built
    register_detectors(monkeypatch, loudness=_loudness_detector())
    base = {"seed": 0, "evaluate": {"bootstrap_rounds": 0, "detectors": ["lipfd"]},
            "detectors": {"lipfd": {"device": "cpu"}}}
    alone = run_evaluate(str(root / "model.pt"), str(root / "clean"), "", str(tmp_path / "a"), base)
    calibration = tmp_path / "fused.json"
    params = {**base, "evaluate": {"bootstrap_rounds": 0, "detectors": ["lipfd", "loudness", "fused"]},
              "detectors": {"lipfd": {"device": "cpu"}, "loudness": {"gain": 2.0},
                            "fused": {"members": ["lipfd", "loudness"], "calibration": str(calibration),
                                      "val_shards": str(root / "clean" / "val-*.tar"), "min_real_windows": 8}}}
    report = run_evaluate(str(root / "model.pt"), str(root / "clean"), str(root / "perturbed"), str(tmp_path / "r"),
                          params)
    blocks = report["detectors"]
    assert list(blocks) == ["lipfd", "loudness", "fused"] and report["primary_detector"] == "lipfd"
    # LipFD's numbers do not move when other detectors join it; the top level keeps its block.
    for key in ("clean", "per_generator"):
        assert blocks["lipfd"][key] == alone["detectors"]["lipfd"][key] == report[key]
    assert report["perturbations"] == blocks["lipfd"]["perturbations"] and report["windows"] == 36
    # Each clip's first window abstained: 4 test clips x 3 sets (clean, blur 1, blur 3).
    loud = blocks["loudness"]
    assert loud["abstentions"]["windows"] == 12 and loud["windows"] == 36 - 12
    assert loud["abstentions"]["clean"] == {"real": 2, "per_generator": {"audio_swap": 2}, "videos_without_score": {}}
    assert loud["abstentions"]["perturbations"] == {"gaussian_blur": {"1": 4, "3": 4}}
    assert loud["abstentions"]["scored_on_fewer_offsets"] == 0  # windows 1 and 2 have their whole context
    assert loud["clean"]["window"]["n"] == 8 and loud["clean"]["video"]["n"] == 4
    # fused: calibrated on the 12 real validation windows, never abstains while LipFD scores.
    fused = blocks["fused"]
    assert fused["abstentions"]["windows"] == 0 and fused["windows"] == 36
    stored = json.loads(calibration.read_text())
    assert stored["real_windows"] == 12 and set(stored["members"]) == {"lipfd", "loudness"}
    assert stored["members"]["loudness"]["real_windows"] == 8  # its window-0 abstentions left out
    assert fused["detector"]["calibration"]["threshold"] == stored["threshold"]
    assert [s.split("-")[0] for s, _ in stored["val_shards"]] == ["val"] * len(stored["val_shards"])
    text = (tmp_path / "r" / "robustness.md").read_text()
    assert "| gaussian_blur | loudness |" in text and "| audio_swap | fused |" in text and "## Abstentions" in text
    levels = pd.read_csv(tmp_path / "r" / "robustness_levels.csv")
    assert set(levels["detector"]) == {"lipfd", "loudness", "fused"}
    assert (tmp_path / "r" / "plots" / "detectors_by_type.png").exists()


def test_fused_never_calibrates_on_tested_shards(built, monkeypatch, tmp_path):
    from avlips.model.evaluate import EvaluateInputError, run_evaluate

    root, _ = built
    register_detectors(monkeypatch, loudness=_loudness_detector())
    params = {"evaluate": {"bootstrap_rounds": 0, "detectors": ["fused"]},
              "detectors": {"lipfd": {"device": "cpu"}, "fused": {
                  "members": ["lipfd", "loudness"], "calibration": str(tmp_path / "f.json"),
                  "val_shards": str(root / "clean" / "test-*.tar")}}}
    with pytest.raises(EvaluateInputError, match="calibrate on tested shards"):
        run_evaluate(str(root / "model.pt"), str(root / "clean"), "", str(tmp_path / "r"), params)


def _strip_audio(source: Path, target: Path) -> None:
    """Copies of the test shards as compose wrote them before the audio field existed."""
    from avlips.pipelines.shards import iter_tar_samples, tar_bytes

    target.mkdir()
    for tar in sorted(source.glob("test-*.tar")):
        samples = [(key, {n: b for n, b in members.items() if n != "audio.npy"})
                   for key, members in iter_tar_samples(tar.read_bytes())]
        (target / tar.name).write_bytes(tar_bytes(samples))


@pytest.mark.slow
def test_old_shards_without_audio(built, monkeypatch, tmp_path):
    """LipFD reads them as before; a detector that needs the audio names the shard and the field."""
    from avlips.model.detectors import DetectorError
    from avlips.model.evaluate import run_evaluate

    root, _ = built
    _strip_audio(root / "clean", tmp_path / "old")
    params = {"evaluate": {"bootstrap_rounds": 0}, "detectors": {"lipfd": {"device": "cpu"}}}
    new = run_evaluate(str(root / "model.pt"), str(root / "clean"), "", str(tmp_path / "a"), params)
    old = run_evaluate(str(root / "model.pt"), str(tmp_path / "old"), "", str(tmp_path / "b"), params)
    assert old["clean"] == new["clean"] and old["windows"] == 12
    register_detectors(monkeypatch, loudness=_loudness_detector())
    params["evaluate"]["detectors"] = ["lipfd", "loudness"]
    with pytest.raises(DetectorError, match=r"old/test-000000.tar: sample \S+ lacks field 'audio.npy'"):
        run_evaluate(str(root / "model.pt"), str(tmp_path / "old"), "", str(tmp_path / "c"), params)


def test_detect_with_a_combination_says_which_member_abstained(built, monkeypatch, tmp_path):
    """fused scores every window LipFD scores, and the window where the audio detector abstained says so."""
    from avlips.model.detect import detect, format_detection

    root, clips = built
    register_detectors(monkeypatch, loudness=_loudness_detector())
    params = {"detectors": {"lipfd": {"model": str(root / "model.pt"), "device": "cpu"},
                            "fused": {"members": ["lipfd", "loudness"], "calibration": str(tmp_path / "fused.json"),
                                      "val_shards": str(root / "clean" / "val-*.tar"), "min_real_windows": 8}}}
    result = detect(str(clips[2]), window=WindowConfig(n_windows=3, frame_size=64), centred=True, detector="fused",
                    params=params)
    assert result.detector == "fused" and (tmp_path / "fused.json").exists()  # calibrated on first use
    assert all(w["score"] is not None for w in result.windows)
    assert result.windows[0]["members_abstained"] == {"loudness": "no speech (window 0)"}
    assert "members_abstained" not in result.windows[1]
    assert "(loudness abstained: no speech (window 0))" in format_detection(result)
